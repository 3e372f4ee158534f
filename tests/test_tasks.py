"""Challenger prompts, JSON extraction and task validation (spice.tasks, spice.json_extract)."""

from __future__ import annotations

import json
import random
import time

import pytest

from spice.corpus import Document
from spice.tasks import (
    ANSWER_KINDS,
    GROUNDING_MODES,
    INVALID_REASONS,
    Invalid,
    Task,
    challenger_messages,
    format_selection_messages,
    parse_format_choice,
    parse_task,
    reason_counts,
    reasoner_messages,
)

DOC = Document(
    id="doc-eiffel",
    text=("The Eiffel Tower in Paris was completed in 1889 for the World's Fair.\nIt is 330 metres tall.  "
          "Gustave Eiffel's company designed and built it. About 7 million people visit it every year."),
    source="test",
)
Q = "In which year was the Eiffel Tower in Paris completed?"
QUOTE = "The Eiffel Tower in Paris was completed in 1889"


def free(answer="1889", answer_type="integer", question=Q, quote=QUOTE, **extra) -> str:
    obj = {"answer_type": answer_type, "quote": quote, "question": question, "solution": "Stated directly.",
           "answer": answer, "difficulty": "easy", **extra}
    return json.dumps(obj)


def mcq(options=("1887", "1889", "1901", "1875"), answer="B", question=Q, quote=QUOTE) -> str:
    return json.dumps({"quote": quote, "question": question, "options": list(options), "solution": "",
                       "answer": answer, "difficulty": "medium"})


# (completion text, kind asked for, expected: "valid" or an invalid reason)
CASES = [
    # well formed
    (free(), "integer", "valid"),
    (free(), None, "valid"),
    (mcq(), "mcq", "valid"),
    (mcq(), None, "valid"),
    (free("330.0", "float", "How tall is the Eiffel Tower in metres?", "It is 330 metres tall."), "float", "valid"),
    (free("Gustave Eiffel", "string", "Whose company built the Eiffel Tower?",
          "Gustave Eiffel's company designed and built it"), "string", "valid"),
    (free("330/1889", "expression", "What is the ratio of the Eiffel Tower's height in metres to the year "
          "it was completed?", "It is 330 metres tall."), "expression", "valid"),
    # wrappers: fences, prose, single quotes, trailing commas, Python literals
    ("```json\n" + free() + "\n```", "integer", "valid"),
    ("Sure! Here is the task:\n" + free() + "\nI hope this helps.", "integer", "valid"),
    ("{'answer_type': 'integer', 'quote': 'completed in 1889 for the World\\'s Fair', 'question': "
     "'In which year was the Eiffel Tower in Paris completed?', 'answer': '1889',}", "integer", "valid"),
    ('{"question": "' + Q + '", "answer": 1889, "quote": "' + QUOTE + '", "solution": null,}', "integer", "valid"),
    ("Example: {\"question\": \"x\"} no wait. " + mcq(), "mcq", "valid"),
    # extraction failures
    ("", "integer", "no_json"),
    ("The answer is 1889.", "integer", "no_json"),
    ('{"question": "' + Q + '", "answer": "18', "integer", "truncated"),
    ('```json\n{"quote": "The Eiffel', "mcq", "truncated"),
    ('{"question": ' + Q + ', "answer": 1889}', "integer", "malformed_json"),
    ("{question: what, answer: 5}", None, "malformed_json"),
    # fields
    (json.dumps({"question": Q, "quote": QUOTE}), "integer", "missing_field"),
    (json.dumps({"answer": "1889", "quote": QUOTE}), "integer", "missing_field"),
    (json.dumps({"question": Q, "answer": "1889"}), "integer", "missing_field"),
    (json.dumps({"question": Q, "answer": "B", "quote": QUOTE}), "mcq", "missing_field"),
    (json.dumps({"question": Q, "answer": "1889", "quote": QUOTE}), None, "missing_field"),
    (json.dumps({"question": [Q], "answer": "1889", "quote": QUOTE}), "integer", "wrong_type"),
    (json.dumps({"question": Q, "answer": True, "quote": QUOTE}), "integer", "wrong_type"),
    (json.dumps({"question": Q, "answer": "1889", "quote": {"text": QUOTE}}), "integer", "wrong_type"),
    (json.dumps({"question": Q, "answer": "B", "quote": QUOTE, "options": "A B C D"}), "mcq", "wrong_type"),
    (free(answer_type="date"), None, "unknown_answer_type"),
    (free(answer_type="string"), "integer", "kind_mismatch"),
    # content
    (free(question="   "), "integer", "empty_question"),
    (free(answer=" "), "integer", "empty_answer"),
    (free(answer="about 1889"), "integer", "answer_type_mismatch"),
    (free(answer="3.5"), "integer", "answer_type_mismatch"),
    (free(answer="three hundred", answer_type="float"), "float", "answer_type_mismatch"),
    (free(answer="a very tall iron tower", answer_type="string"), "string", "answer_type_mismatch"),
    (free(answer="(1889 + 1", answer_type="expression"), "expression", "answer_type_mismatch"),
    (mcq(options=("1887", "1889", "1901")), "mcq", "mcq_options"),
    (mcq(options=("1887", "1889", "1889 ", "1875")), "mcq", "mcq_options"),
    (mcq(options=("1887", "", "1901", "1875")), "mcq", "mcq_options"),
    (mcq(answer="E"), "mcq", "mcq_gold_letter"),
    (mcq(answer="1950"), "mcq", "mcq_gold_letter"),
    (free(question="According to the text, when was the tower completed?"), "integer", "refers_to_document"),
    (free(question="In which year was the building described in the passage completed?"), "integer",
     "refers_to_document"),
    (free(question="When was the tower mentioned above completed?"), "integer", "refers_to_document"),
    (free(quote=""), "integer", "empty_quote"),
    (free(quote="1889"), "integer", "quote_too_short"),
    (free(quote="The Eiffel Tower was finished in 1889"), "integer", "quote_not_in_document"),
    (free(question="The Eiffel Tower was completed in 1889. In which year was it completed?"), "integer",
     "answer_in_question"),
    # what the 135M model wrote in the first learning run (docs/learning.md): valid by the schema, no task
    (mcq(question="2"), "mcq", "question_too_short"),
    (mcq(question="Why?"), "mcq", "question_too_short"),
    (mcq(options=("D", "A", "C", "B")), "mcq", "mcq_options"),
    (mcq(options=("1887", "(b)", "1901", "1875")), "mcq", "mcq_options"),
    (mcq(options=("1887", "1889", "...", "1875")), "mcq", "mcq_options"),
    # what run 3 learned to write: the difficulty field's values as options
    (mcq(options=("1889", "medium|easy", "hard", "Medium")), "mcq", "mcq_options"),
    (mcq(options=("1889", "easy-medium", "Difficulty", "1875")), "mcq", "mcq_options"),
    (mcq(options=("1889", "hard", "soft", "1875")), "mcq", "valid"),  # one such word can be an answer
    (mcq(question="Who won the Tour de France that summer?", options=("Merckx", "Hinault", "Coppi", "Bobet")),
     "mcq", "question_off_quote"),
    (free(question="What number is the answer to this puzzle?", answer="7"), "integer", "question_off_quote"),
    (mcq(question="Which year is it?"), "mcq", "valid"),  # the gold option (1889) is in the quote
]


@pytest.mark.parametrize(("text", "kind", "expected"), CASES)
def test_challenger_outputs(text, kind, expected):
    result = parse_task(text, DOC, kind)
    if expected == "valid":
        assert isinstance(result, Task), result
        assert result.doc_id == DOC.id
    else:
        assert isinstance(result, Invalid), result
        assert result.reason == expected, result


def test_cases_cover_every_reason():
    covered = {expected for _, _, expected in CASES}
    assert set(INVALID_REASONS) - {"unknown_format"} <= covered  # unknown_format: the format verdict


def test_valid_task_fields():
    task = parse_task(mcq(options=("A) 1887", "(B) 1889", "C. 1901", "D: 1875"), answer="(B)"), DOC, "mcq")
    assert task == Task(question=Q, answer="B", kind="mcq", doc_id=DOC.id, options=("1887", "1889", "1901", "1875"),
                        quote=QUOTE, solution="", difficulty="medium")
    task = parse_task(free(answer="+1,889"), DOC, "integer")
    assert task.answer == "1889" and task.kind == "integer" and task.solution == "Stated directly."


@pytest.mark.parametrize(("answer", "letter"), [("b", "B"), ("B)", "B"), ("option C", "C"), ("1901", "C"),
                                                 ("D) 1875", "D"), ("A.", "A")])
def test_gold_letter_forms(answer, letter):
    assert parse_task(mcq(answer=answer), DOC, "mcq").answer == letter


def test_options_as_mapping():
    text = json.dumps({"question": Q, "quote": QUOTE, "answer": "A",
                       "options": {"A": "1889", "B": "1887", "C": "1901", "D": "1875"}})
    assert parse_task(text, DOC).options == ("1889", "1887", "1901", "1875")


def test_grounding_normalises_whitespace_case_and_typography():
    quote = "it IS 330 metres\n tall. gustave eiffel\u2019s   company"
    assert isinstance(parse_task(free(quote=quote), DOC, "integer"), Task)
    elided = "The Eiffel Tower in Paris ... designed and built it"
    assert isinstance(parse_task(free(quote=elided), DOC, "integer"), Task)
    out_of_order = "designed and built it ... The Eiffel Tower in Paris"
    assert parse_task(free(quote=out_of_order), DOC, "integer").reason == "quote_not_in_document"


def test_latex_backslashes_survive():
    text = ('{"answer_type": "expression", "quote": "It is 330 metres tall.", "question": "Half the height '
            'of the Eiffel Tower in metres, as a fraction?", "answer": "\\frac{330}{2}", "solution": "\\text{x}"}')
    task = parse_task(text, DOC, "expression")
    assert task.answer == "\\frac{330}{2}" and task.solution == "\\text{x}"


@pytest.mark.parametrize(("text", "expected"), [
    ('{"format": "mcq"}', ("mcq", "mcq")),
    ('{"format": "free_form", "answer_type": "integer"}', ("free_form", "integer")),
    ("```json\n{'format': 'Free-form', 'answer_type': 'Short string'}\n```", ("free_form", "string")),
    ('I choose {"format": "multiple choice"} because...', ("mcq", "mcq")),
    ('{"format": "free_form", "answer_type": "number"}', ("free_form", "float")),
    ('{"format": "essay"}', "unknown_format"),
    ('{"format": "free_form", "answer_type": "list of colours"}', "unknown_answer_type"),
    ('{"format": "free_form"}', "missing_field"),
    ('{"kind": "mcq"}', "missing_field"),
    ("mcq", "no_json"),
    ('{"format": "mc', "truncated"),
])
def test_parse_format_choice(text, expected):
    result = parse_format_choice(text)
    if isinstance(expected, tuple):
        assert result == expected
    else:
        assert isinstance(result, Invalid) and result.reason == expected, result


def test_never_raises_on_any_string():
    rng = random.Random(0)
    alphabet = '{}[]"\':,\\ abcAB0123.\n`-'
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for kind in (None, *ANSWER_KINDS):
            assert isinstance(parse_task(text, DOC, kind), (Task, Invalid))
        assert isinstance(parse_format_choice(text), (tuple, Invalid))
    assert isinstance(parse_task(None, DOC), Invalid)  # type: ignore[arg-type]
    assert parse_task("{" * 50_000, DOC).reason == "truncated"
    assert parse_task("[" * 5000 + "{}" + "]" * 5000, DOC).reason == "missing_field"


def test_huge_random_input_is_bounded():
    text = random.Random(1).randbytes(10_000_000).decode("latin-1")
    start = time.perf_counter()
    assert isinstance(parse_task(text, DOC), Invalid)
    assert time.perf_counter() - start < 10  # generous: guards against quadratic scans, not a benchmark


def test_bad_kind_or_style_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'essay'"):
        parse_task(free(), DOC, "essay")
    with pytest.raises(ValueError, match="'tiny'"):
        challenger_messages(DOC, "mcq", style="tiny")


def _chat(messages):
    assert all(set(m) == {"role", "content"} for m in messages)
    assert messages[-1]["role"] == "user"
    return "\n".join(m["content"] for m in messages)


@pytest.mark.parametrize("style", ["paper", "compact"])
def test_challenger_prompts(style):
    text = _chat(format_selection_messages(DOC, style))
    assert DOC.text in text and "mcq" in text and "free_form" in text
    for kind in ("integer", "float", "expression", "string"):
        assert kind in text
    for kind in ANSWER_KINDS:
        text = _chat(challenger_messages(DOC, kind, style))
        assert DOC.text in text and "quote" in text and "question" in text and '"the text"' in text
        assert ("options" in text) == (kind == "mcq")
        assert ("solution" in text) == (style == "paper")


def test_compact_prompts_are_shorter():
    for kind in ANSWER_KINDS:
        paper = len(_chat(challenger_messages(DOC, kind, "paper")))
        assert len(_chat(challenger_messages(DOC, kind, "compact"))) < paper - 300
    assert len(_chat(format_selection_messages(DOC, "compact"))) < len(_chat(format_selection_messages(DOC)))


@pytest.mark.parametrize("style", ["paper", "compact"])
def test_reasoner_prompt_has_question_not_document(style):
    task = parse_task(mcq(), DOC, "mcq")
    text = _chat(reasoner_messages(task, style))
    assert Q in text and "\\boxed{}" in text and "B. 1889" in text and "D. 1875" in text
    assert "330 metres" not in text and QUOTE not in text
    text = _chat(reasoner_messages(parse_task(free(), DOC, "integer"), style))
    assert Q in text and "\\boxed{}" in text and "A." not in text


def test_reason_counts():
    results = [parse_task(text, DOC, kind) for text, kind, _ in CASES]
    counts = reason_counts(results)
    assert set(counts) == {"valid", *INVALID_REASONS}
    assert sum(counts.values()) == len(CASES)
    assert counts["valid"] == sum(expected == "valid" for _, _, expected in CASES)
    assert counts["unknown_format"] == 0


SLOBODYSHCHE = Document(id="doc-slob", source="test", text=(
    "In the autumn campaign the Cossack hetman changed sides twice. On 7-8 October at the Battle of "
    "Slobodyshche, the Polish and Cossack forces stopped the Muscovite relief army, which surrendered at "
    "Chudnov soon after."))
SLOB_Q = "Which army surrendered at Chudnov after the battle in October 1660?"


@pytest.mark.parametrize(("quote", "exact", "fuzzy"), [
    ("On 7-8 October at the Battle of Slobodyshche", True, True),
    ("On October 7-8 at the Battle of Slobodyshche", False, True),  # a close paraphrase
    ("the Polish and Cossack forces stopped the relief army", False, True),  # one word dropped
    ("The battle of Waterloo was won by Wellington in 1815", False, False),  # unrelated
    ("qwxz vbnm poiuyt lkjhgf mnbv", False, False),  # gibberish
    ("t...h...e...a...r", False, False),  # fragments too short, each on its own
    ("The ... of ... the", False, False),
    ("the autumn campaign ... surrendered at Chudnov", True, True),
    ("surrendered at Chudnov ... the autumn campaign", False, False),  # out of order
])
def test_grounding_modes(quote, exact, fuzzy):
    text = free(answer="Muscovite army", answer_type="string", question=SLOB_Q, quote=quote)
    got = {mode: isinstance(parse_task(text, SLOBODYSHCHE, "string", grounding=mode), Task)
           for mode in GROUNDING_MODES}
    assert got == {"exact": exact, "fuzzy": fuzzy, "off": True}, got


def test_fuzzy_grounding_is_the_default_and_modes_are_checked():
    text = free(answer="Muscovite army", answer_type="string", question=SLOB_Q,
                quote="On October 7-8 at the Battle of Slobodyshche")
    assert isinstance(parse_task(text, SLOBODYSHCHE, "string"), Task)
    with pytest.raises(ValueError, match="'loose'"):
        parse_task(text, SLOBODYSHCHE, "string", grounding="loose")


@pytest.mark.parametrize(("answer", "kind", "question", "leaks"), [
    ("1889", "integer", "The tower opened in 1889; in which year did it open?", True),
    ("1,889", "integer", "Built by 1889, when was it finished?", True),
    ("330", "integer", "How tall is the 330 metre tower, in metres?", True),
    ("3.75", "float", "A ratio of 3.75 was measured; what was it?", True),
    ("Gustave Eiffel", "string", "Whose company, that of Gustave Eiffel, built the tower?", True),
    ("7", "integer", "How many million visitors, give or take 7, come each year?", False),  # one digit
    ("1889", "integer", "How many years after 18890 BC?", False),  # part of another number
    ("889", "integer", "In which year, 1889 minus 1000, ...?", False),
    ("Paris", "string", "Which city, Paris or Rome, has the tower?", False),  # one word: may be a choice
])
def test_answer_in_question(answer, kind, question, leaks):
    result = parse_task(free(answer=answer, answer_type=kind, question=question), DOC, kind, grounding="off")
    assert (getattr(result, "reason", None) == "answer_in_question") is leaks, result


def test_integer_answers_of_any_length_are_canonical_without_int():
    huge = "-" + "0" * 3 + "9" * 10_000
    task = parse_task(free(answer=huge), DOC, "integer")
    assert isinstance(task, Task) and task.answer == "-" + "9" * 10_000
    assert parse_task(free(answer="-0"), DOC, "integer").answer == "0"


def test_shuffled_options_move_the_gold_with_its_option_and_spread_the_letters():
    import random
    from collections import Counter

    from spice.tasks import Task, shuffled_options

    task = Task("Which metal melts at 1064 C?", "A", "mcq", "d", ("Gold", "Iron", "Tin", "Lead"))
    letters = Counter()
    for seed in range(400):
        shown = shuffled_options(task, random.Random(seed))
        assert shown.options[ord(shown.answer) - ord("A")] == "Gold"
        assert [task.options[i] for i in shown.option_order] == list(shown.options)
        letters[shown.answer] += 1
    assert set(letters) == set("ABCD") and all(70 <= n <= 130 for n in letters.values())  # 100 expected
    free = Task("How many?", "3", "integer", "d")
    assert shuffled_options(free, random.Random(0)) is free
