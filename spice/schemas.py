"""JSON schemas of the challenger's replies, for schema-constrained decoding (xgrammar in-process,
SGLang's `json_schema` on a cluster).

Each schema holds exactly the keys `spice.tasks` reads, in the order the prompts ask for them (the
quote before the question, the solution before the answer), with every string bounded so that a
constrained reply always ends. A schema-valid reply parses with `parse_task`, or is rejected only for
one of SEMANTIC_REASONS, which no schema can express (the quote must occur in the document, say).

Length bounds: free text uses minLength/maxLength. Typed answers use anchored patterns whose
repetition counts bound their length, because xgrammar ignores maxLength beside a pattern and its
regex compiler unrolls counted repetition (keep counts small: {1,200} fails to compile in 0.2.8)."""

from __future__ import annotations

import json
import re

from spice.tasks import ANSWER_KINDS, DIFFICULTIES, LETTERS, MIN_QUOTE_CHARS, PROMPT_STYLES


# Upper bounds in characters per style; compact keeps small models' CPU decoding short. The question,
# the options and the quote share one bound on purpose: xgrammar compiles each distinct string rule
# once (seconds per rule on a CPU), so one bound instead of three cuts a schema's compile time by two
# thirds. The quote's minimum length is left to the parser (quote_too_short) for the same reason.
LIMITS = {
    "paper": {"text": 300, "solution": 1000, "expression": 100},
    "compact": {"text": 200, "solution": 0, "expression": 60},
}

_WORD = r'[^\x00-\x20"\\]{1,20}'
ANSWER_PATTERNS = {
    "integer": r"^-?[0-9]{1,15}$",
    "float": r"^-?[0-9]{1,12}(\.[0-9]{1,8}|)$",  # not "(...)?": xgrammar 0.2.8 then drops the {1,12}
    "string": rf"^{_WORD}( {_WORD}){{0,2}}$",
}

# Reasons `parse_task` may give a schema-valid reply: whitespace-only text, duplicate options, an
# expression with unbalanced brackets, and the checks against the document and the wording.
SEMANTIC_REASONS = frozenset({
    "empty_question", "empty_answer", "answer_type_mismatch", "mcq_options", "refers_to_document",
    "empty_quote", "quote_too_short", "quote_not_in_document", "question_too_short", "question_off_quote",
})


def _text(max_chars: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_chars}


def _object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def format_selection_schema() -> dict:
    """The format verdict: {"format": "mcq"} or {"format": "free_form", "answer_type": <free kind>}."""
    return {"anyOf": [
        _object({"format": {"const": "mcq"}}),
        _object({"format": {"const": "free_form"}, "answer_type": {"enum": list(ANSWER_KINDS[1:])}}),
    ]}


def quote_choices(text: str, style: str = "paper") -> list[str]:
    """The document's sentences, long ones cut at word boundaries to the style's text bound, each at least
    MIN_QUOTE_CHARS long: the quotes a decoder under `task_schema(..., quotes=...)` can choose from."""
    limit, choices = LIMITS[style]["text"], []
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
        piece = ""
        for word in sentence.split(" "):
            if piece and len(piece) + 1 + len(word) > limit:
                choices.append(piece)
                piece = ""
            piece = f"{piece} {word}" if piece else word[:limit]
        choices.append(piece)
    return list(dict.fromkeys(c for c in choices if len(c) >= MIN_QUOTE_CHARS))


def task_schema(kind: str, style: str = "paper", program: str | None = None,
                quotes: list[str] | None = None) -> dict:
    """The task reply for `kind` (one of ANSWER_KINDS) in prompt `style` ("compact" has shorter bounds
    and no solution, as its prompt asks). `program` ("required": non-empty, "optional": may be empty)
    adds the check program before the answer, bounded like the solution (the question in "compact").
    `quotes` (from `quote_choices`) makes the quote one of the document's own sentences, so a constrained
    reply is always grounded verbatim; the question is still the challenger's to tie to it."""
    if program not in (None, "optional", "required"):
        raise ValueError(f"program {program!r} is not None, 'optional' or 'required'")
    if kind not in ANSWER_KINDS:
        raise ValueError(f"task kind {kind!r} is not one of {ANSWER_KINDS}")
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r} is not one of {PROMPT_STYLES}")
    limits = LIMITS[style]
    properties: dict = {} if kind == "mcq" else {"answer_type": {"const": kind}}
    properties["quote"] = {"enum": list(quotes)} if quotes else _text(limits["text"])
    properties["question"] = _text(limits["text"])
    if kind == "mcq":
        properties["options"] = {"type": "array", "items": _text(limits["text"]), "minItems": 4, "maxItems": 4}
    if limits["solution"]:
        properties["solution"] = _text(limits["solution"])
    if program:
        properties["program"] = _text(limits["solution"] or limits["text"])
        if program == "optional":
            properties["program"].pop("minLength")
    if kind == "mcq":
        properties["answer"] = {"enum": list(LETTERS)}
    elif kind == "expression":
        properties["answer"] = _text(limits["expression"])
    else:
        properties["answer"] = {"type": "string", "pattern": ANSWER_PATTERNS[kind]}
    properties["difficulty"] = {"enum": list(DIFFICULTIES)}
    return _object(properties)


def answer_regex(kind: str, max_new_tokens: int) -> str:
    """The reasoner's reply under `reasoner.constrained_answer`: free reasoning without braces or
    backslashes, then one final `\\boxed{...}`, a letter A-D for multiple choice, else up to 64
    characters with at most one level of braces (so \\frac{1}{2} fits). The reasoning is bounded at two
    characters per new token, so that most replies box an answer before `max_new_tokens`; one that does
    not is cut and, having no box, wrong. SGLang compiles it with the same xgrammar (0.2.7 in 0.5.23)."""
    if kind not in ANSWER_KINDS:
        raise ValueError(f"task kind {kind!r} is not one of {ANSWER_KINDS}")
    box = "[A-D]" if kind == "mcq" else r"([^{}\n]|\{[^{}\n]{0,32}\}){1,64}"
    return rf"[^\\{{}}]{{0,{2 * max(max_new_tokens, 8)}}}\\boxed\{{{box}\}}"


def schema_json(schema: dict) -> str:
    """The schema as engines take it (`SamplingParams.json_schema`); keys are not sorted, because the
    order of the properties is the order in which the decoder writes them."""
    return json.dumps(schema, separators=(",", ":"))
