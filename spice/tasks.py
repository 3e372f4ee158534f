"""Prompts of both roles, and turning challenger output into a validated `Task` or an `Invalid`."""

from __future__ import annotations

from dataclasses import dataclass, field

ANSWER_KINDS = ("mcq", "integer", "float", "expression", "string")


@dataclass(frozen=True)
class Task:
    """A question with a verifiable gold answer, grounded in one document."""

    question: str
    answer: str  # for "mcq" the gold letter A-D
    kind: str  # one of ANSWER_KINDS
    doc_id: str
    options: tuple[str, ...] = ()  # four options for "mcq"
    quote: str = ""  # the supporting quote from the document
    solution: str = ""
    difficulty: str = ""


@dataclass(frozen=True)
class Invalid:
    """A challenger output that is not a usable task; `reason` is one of INVALID_REASONS."""

    reason: str
    detail: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)
