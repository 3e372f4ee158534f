"""Evaluation through the project's own pieces: a benchmark item becomes a `Task`, is asked with the
reasoner's prompt (the one training uses) and answered responses are judged by `spice.verify`."""

from __future__ import annotations

from dataclasses import dataclass

from spice.chat import chat_prompt_ids
from spice.eval.benchmarks import LETTERS, Item
from spice.tasks import Task


@dataclass(frozen=True)
class Verdict:
    """The answer extracted from one response and whether it matches the gold answer."""

    extracted: str | None
    correct: bool


def item_task(item: Item, benchmark: str = "") -> Task:
    """The `Task` the reasoner sees for `item`: same question, gold, kind and lettered options."""
    return Task(question=item.question, answer=item.answer, kind=item.kind,
                doc_id=f"{benchmark}/{item.id}" if benchmark else item.id, options=tuple(item.choices))


def _letter_list(letters: str) -> str:
    return letters[0] if len(letters) == 1 else ", ".join(letters[:-1]) + " or " + letters[-1]


def item_messages(item: Item, style: str = "paper", benchmark: str = "") -> list[dict]:
    """The reasoner's chat messages for `item` (`spice.tasks.reasoner_messages`). That prompt lays out
    the four options A-D of challenger tasks; for a benchmark question with another number of choices
    the option list and the letters named in the instruction are completed to all of its choices."""
    from spice.tasks import reasoner_messages

    messages = reasoner_messages(item_task(item, benchmark), style)
    if item.kind != "mcq" or len(item.choices) == 4:
        return messages
    content = messages[-1]["content"]
    full = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, item.choices))
    if full in content:
        return messages
    shown = "\n".join(f"{letter}. {choice}" for letter, choice in zip("ABCD", item.choices))
    content = content.replace(shown, full, 1).replace(_letter_list("ABCD"),
                                                       _letter_list(LETTERS[:len(item.choices)]))
    return [*messages[:-1], {**messages[-1], "content": content}]


def item_prompt(tokenizer, item: Item, style: str = "paper", benchmark: str = "") -> list[int]:
    """Token ids of the reasoner prompt for `item`, rendered with the tokenizer's chat template."""
    return chat_prompt_ids(tokenizer, item_messages(item, style, benchmark))


def judge(responses: list[tuple[str, Item]]) -> list[Verdict]:
    """Verdicts for (response, item) pairs: MCQ by letter, math by the project's verifier."""
    from spice.verify import extract_answer, verify_batch

    if not responses:
        return []
    verdicts = verify_batch([(text, item.answer, item.kind) for text, item in responses])
    return [Verdict(extract_answer(text, item.kind), bool(correct))
            for (text, item), correct in zip(responses, verdicts)]
