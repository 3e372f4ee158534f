"""Scoring: benchmark items become reasoner tasks and hand-made responses get the right verdicts."""

from __future__ import annotations

import pytest

from spice.eval.benchmarks import Item, load_benchmark
from spice.eval.scoring import item_messages, item_prompt, item_task, judge
from spice.testing import TOKENIZER_DIR

GSM = Item("0", "Janet has 16 eggs and uses 7. She sells the rest for $2 each. How much does she make?", "18",
           "integer")
MATH = Item("0", "Convert the point $(0,3)$ to polar coordinates.", "\\left( 3, \\frac{\\pi}{2} \\right)",
            "expression")
MCQ4 = Item("m", "Which planet is the largest?", "B", "mcq", ("Mars", "Jupiter", "Venus", "Earth"))
MCQ5 = Item("c", "Where is a revolving door a security measure?", "E", "mcq",
            ("library", "mall", "school", "park", "bank"))

CASES = [
    ("She sells 9 eggs for $2 each, so she makes $\\boxed{18}$.", GSM, True),
    ("9 * 2 = 18. The answer is \\boxed{18} dollars", GSM, True),
    ("She makes \\boxed{16}.", GSM, False),
    ("I am not sure.", GSM, False),
    ("So the point is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", MATH, True),
    ("$r = 3$, $\\theta = \\pi/2$, so $\\boxed{(3, \\frac{\\pi}{2})}$", MATH, True),
    ("$\\boxed{(3, \\pi)}$", MATH, False),
    ("Jupiter is the largest planet. \\boxed{B}", MCQ4, True),
    ("\\boxed{A}", MCQ4, False),
    ("The bank. \\boxed{E}", MCQ5, True),
    ("\\boxed{B}", MCQ5, False),
]


def test_judge_hand_made_responses() -> None:
    verdicts = judge([(response, item) for response, item, _ in CASES])
    assert [v.correct for v in verdicts] == [expected for _, _, expected in CASES]
    assert verdicts[0].extracted == "18"
    assert verdicts[7].extracted == "B" and verdicts[9].extracted == "E"
    assert verdicts[3].extracted is None or verdicts[3].extracted != "18"


def test_judge_empty() -> None:
    assert judge([]) == []


def test_item_task_carries_question_gold_kind_and_options() -> None:
    task = item_task(MCQ4, "mmlu")
    assert (task.question, task.answer, task.kind, task.options, task.doc_id) == (
        MCQ4.question, "B", "mcq", MCQ4.choices, "mmlu/m")


def test_prompt_is_the_reasoner_prompt_and_never_contains_the_gold() -> None:
    from spice.tasks import reasoner_messages

    assert item_messages(GSM) == reasoner_messages(item_task(GSM), "paper")
    assert item_messages(MCQ4, "compact") == reasoner_messages(item_task(MCQ4), "compact")
    content = item_messages(GSM)[-1]["content"]
    assert GSM.question in content and "\\boxed" in content and "18" not in content


@pytest.mark.parametrize("style", ["paper", "compact"])
def test_every_choice_of_a_five_choice_question_is_shown(style: str) -> None:
    content = item_messages(MCQ5, style)[-1]["content"]
    for letter, choice in zip("ABCDE", MCQ5.choices):
        assert f"{letter}. {choice}" in content
    if style == "paper":
        assert "E" in content.split("\\boxed")[0].rsplit("(", 1)[-1]  # the instruction names E too


def test_prompt_ids_use_the_chat_template() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    item = load_benchmark("arc_challenge").items[0]
    text = tokenizer.decode(item_prompt(tokenizer, item, "paper", "arc_challenge"))
    assert text.startswith("<|im_start|>") and text.rstrip().endswith("<|im_start|>assistant")
    assert item.question in text and all(choice in text for choice in item.choices)
