"""Prompts of both roles, and turning challenger output into a validated `Task` or an `Invalid`.

The challenger first picks a format for a document (a small JSON verdict), then writes the task as
JSON: a self-contained question, its gold answer, a quote copied from the document that supports it,
a worked solution and a difficulty. The reasoner sees only the question and boxes its answer."""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from spice.corpus import Document
from spice.json_extract import ExtractError, extract_json_object

ANSWER_KINDS = ("mcq", "integer", "float", "expression", "string")
FREE_FORM_KINDS = ANSWER_KINDS[1:]
PROMPT_STYLES = ("paper", "compact")
LETTERS = ("A", "B", "C", "D")
MIN_QUOTE_CHARS = 8  # a shorter quote ("1947", "yes"), or fragment of one, grounds nothing
GROUNDING_MODES = ("exact", "fuzzy", "off")  # challenger.grounding: how a quote must match its document
FUZZY_THRESHOLD = 85.0  # rapidfuzz partial_ratio (0-100) of each quote part against the document
MAX_FUZZY_CHARS = 2000  # a longer quote part must occur verbatim (alignment cost grows with its length)
MAX_STRING_WORDS = 3  # the paper's short-string answers

INVALID_REASONS: tuple[str, ...] = (
    "no_json",  # no JSON object in the output
    "truncated",  # an object is opened but the output ends before it closes
    "malformed_json",  # braces balance but the object does not parse, even after repairs
    "missing_field",  # a required key is absent
    "wrong_type",  # a key holds the wrong JSON type (e.g. a list as the question)
    "unknown_format",  # format verdict names neither mcq nor free form
    "unknown_answer_type",  # free-form answer type outside integer|float|expression|string
    "kind_mismatch",  # the task's answer_type contradicts the kind that was asked for
    "empty_question",
    "empty_answer",
    "answer_type_mismatch",  # e.g. an "integer" answer that is not an integer
    "mcq_options",  # not exactly four distinct non-empty options
    "mcq_gold_letter",  # the gold answer is not one of A-D
    "refers_to_document",  # "according to the text", "the passage above", ...
    "empty_quote",
    "quote_too_short",
    "quote_not_in_document",  # the grounding check
    "answer_in_question",  # the question states its own gold answer (a multi-word string, a multi-digit number)
    "question_too_short",  # fewer than MIN_QUESTION_WORDS words: "2", "A", "Why?" ask nothing answerable
    "question_off_quote",  # neither the question nor the gold answer shares a word with the quote
)
MIN_QUESTION_WORDS = 3  # words of two letters or more
_WORDS = re.compile(r"[^\W\d_]{2,}")
_CONTENT_WORD = re.compile(r"[^\W\d_]{4,}|\d{2,}")  # what ties a question to its quote: a word or a number
_LABEL_ONLY = re.compile(r"\(?[A-Da-d]\)?[.:)]?")
DIFFICULTIES = ("easy", "medium", "hard")  # the task's own "difficulty" field
# An option made only of these words is the difficulty field copied into the options, not an answer: run 3
# of docs/learning.md (60 iterations) learned to write such options (18% of valid tasks early, 34% late).
_DIFFICULTY_WORDS = frozenset((*DIFFICULTIES, "difficulty", "difficult"))


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
    # "mcq" after shuffled_options: the challenger's position of each option as shown (() = as written)
    option_order: tuple[int, ...] = ()


def shuffled_options(task: Task, rng: random.Random) -> Task:
    """The MCQ task with its options in a random order and the gold letter moved with its option: the
    reasoner cannot profit from the challenger's letter habits (a gold that leans to A, a reasoner that
    says A), so naming letters without reading is right 1 time in 4, whatever either role prefers."""
    if task.kind != "mcq" or len(task.options) != len(LETTERS):
        return task
    order = list(range(len(LETTERS)))
    rng.shuffle(order)
    gold = LETTERS.index(task.answer)
    return replace(task, options=tuple(task.options[i] for i in order), answer=LETTERS[order.index(gold)],
                   option_order=tuple(order))


@dataclass(frozen=True)
class Invalid:
    """A challenger output that is not a usable task; `reason` is one of INVALID_REASONS."""

    reason: str
    detail: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


# ---------------------------------------------------------------- prompts

_ANSWER_RULES = {
    "integer": 'an integer written with digits only, e.g. "42" or "-7"',
    "float": 'a decimal number written with digits, e.g. "3.75"',
    "expression": 'a mathematical expression in plain text, e.g. "(x+1)^2" or "sqrt(3)/2"',
    "string": "a short name or phrase of at most three words",
}
_SELF_CONTAINED = ('The question must make sense to someone who never saw the document: name its subject '
                   'explicitly and never refer to "the text", "the passage", "the document", "the article", '
                   '"the author" or "the above".')
_PAPER_SYSTEM = ("You are the challenger in a self-play game. You read real documents and write challenging "
                 "questions whose answers can be checked automatically.")
_COMPACT_SYSTEM = "You write quiz questions as JSON."


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r} is not one of {PROMPT_STYLES}")


def _check_kind(kind: str) -> None:
    if kind not in ANSWER_KINDS:
        raise ValueError(f"task kind {kind!r} is not one of {ANSWER_KINDS}")


def format_selection_messages(document: Document, style: str = "paper") -> list[dict]:
    """Chat messages asking which format (mcq or free form with an answer type) suits `document`."""
    _check_style(style)
    if style == "compact":
        return [{"role": "system", "content": _COMPACT_SYSTEM}, {"role": "user", "content": (
            f"Document:\n{document.text}\n\nWhich question type fits it? Reply in JSON: "
            '{"format": "mcq"} or {"format": "free_form", "answer_type": "integer|float|expression|string"}.')}]
    types = "\n".join(f'  - "{kind}": {rule}' for kind, rule in _ANSWER_RULES.items())
    return [{"role": "system", "content": _PAPER_SYSTEM}, {"role": "user", "content": (
        "Read the document below and decide which kind of question it supports best.\n\n"
        '- "mcq": a multiple-choice question with four options (A-D), exactly one correct. Good for '
        "documents rich in concepts, definitions and comparisons that invite plausible distractors.\n"
        '- "free_form": a question with one short answer that can be checked exactly; then choose its '
        f"answer type:\n{types}\n\n"
        "Prefer a question that needs reasoning (combining facts, a calculation, a deduction) over a lookup.\n\n"
        f"<document>\n{document.text}\n</document>\n\n"
        'Reply with only a JSON object: {"format": "mcq"} or '
        '{"format": "free_form", "answer_type": "integer"} (or "float", "expression", "string").')}]


_PROGRAM_RULE = ('- "program": a short Python program that computes the answer from the numbers in the document '
                 "(only the modules math, fractions, decimal, statistics, datetime and itertools; no input, no "
                 'files) and prints only the answer, written exactly as in "answer".')


def challenger_messages(document: Document, kind: str, style: str = "paper", program: str | None = None) -> list[dict]:
    """Chat messages asking for one task of `kind` ("mcq" or a free-form answer type) about `document`;
    the keys are asked for in the order of `spice.schemas.task_schema`. `program` ("optional" or
    "required", free-form kinds only) also asks for a check program (spice.checks)."""
    _check_kind(kind)
    _check_style(style)
    if program not in (None, "optional", "required") or (program and kind == "mcq"):
        raise ValueError(f"program {program!r} is not None, 'optional' or 'required' for a free-form kind")
    if style == "compact":
        if kind == "mcq":
            what = "a multiple-choice question"
            keys = ("quote (copied from the document), question, options (4 strings), "
                    "answer (A, B, C or D), difficulty (easy|medium|hard)")
        else:
            what = "a question whose answer is " + _ANSWER_RULES[kind]
            keys = (f'answer_type ("{kind}"), quote (copied from the document), question, '
                    + ("program (Python that computes and prints the answer), " if program else "")
                    + "answer, difficulty (easy|medium|hard)")
        return [{"role": "system", "content": _COMPACT_SYSTEM}, {"role": "user", "content": (
            f"Document:\n{document.text}\n\nWrite {what} about a fact in this document. It must be "
            f'self-contained: never say "the text" or "the passage". JSON keys: {keys}.')}]
    if kind == "mcq":
        task = ("Write one challenging multiple-choice question based on the document below.\n\nRequirements:\n"
                f"- {_SELF_CONTAINED}\n"
                "- Give exactly four distinct options; exactly one is correct and the three distractors "
                "are plausible.\n")
        keys = ('{"quote": "...", "question": "...", "options": ["...", "...", "...", "..."], '
                '"solution": "...", "answer": "A, B, C or D", "difficulty": "easy, medium or hard"}')
    else:
        task = ("Write one challenging question with a single short answer based on the document below.\n\n"
                f"Requirements:\n- {_SELF_CONTAINED}\n- The answer is {_ANSWER_RULES[kind]}.\n")
        keys = (f'{{"answer_type": "{kind}", "quote": "...", "question": "...", "solution": "...", '
                + ('"program": "...", ' if program else "") + '"answer": "...", "difficulty": "easy, medium or hard"}')
        if program:
            task += _PROGRAM_RULE + (' Write "" if the answer needs no computation.\n' if program == "optional"
                                     else "\n")
    return [{"role": "system", "content": _PAPER_SYSTEM}, {"role": "user", "content": (
        f"{task}"
        '- "quote": copy, word for word, a sentence or phrase from the document that supports the answer.\n'
        '- "solution": a short step-by-step derivation of the answer.\n'
        '- "difficulty": your estimate, "easy", "medium" or "hard".\n\n'
        f"<document>\n{document.text}\n</document>\n\n"
        f"Reply with only a JSON object with these keys, in this order:\n{keys}")}]


def reasoner_messages(task: Task, style: str = "paper") -> list[dict]:
    """Chat messages giving the reasoner the question alone (never the document), answer to be boxed."""
    _check_style(style)
    body = task.question.strip()
    if task.kind == "mcq":
        body += "\n\n" + "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, task.options))
        tail = ("Please reason step by step, and put the letter of the correct option (A, B, C or D) "
                "within \\boxed{}." if style == "paper" else "Put the letter of your answer in \\boxed{}.")
    else:
        tail = ("Please reason step by step, and put your final answer within \\boxed{}."
                if style == "paper" else "Put your final answer in \\boxed{}.")
    return [{"role": "user", "content": f"{body}\n\n{tail}"}]


# ---------------------------------------------------------------- parsing

_FORMAT_WORDS = {"mcq": "mcq", "multiple_choice": "mcq", "multiplechoice": "mcq", "free_form": "free_form",
                 "freeform": "free_form", "open": "free_form", "open_ended": "free_form"}
_KIND_WORDS = {"integer": "integer", "int": "integer", "float": "float", "decimal": "float",
               "number": "float", "numeric": "float", "real": "float", "expression": "expression",
               "formula": "expression", "math": "expression", "latex": "expression", "string": "string",
               "short_string": "string", "text": "string", "word": "string", "phrase": "string",
               "name": "string", "mcq": "mcq"}
_REFERS = re.compile(
    r"\b(?:according to|in|from|based on|within|per|of|by)\s+(?:the|this|that)\s+(?:given\s+|provided\s+)?"
    r"(?:text|passage|document|article|excerpt|paragraph|snippet|context|reading|story|source)s?\b"
    r"|\b(?:the|this|that|above|following|preceding|given|provided)\s+(?:text|passage|document|article|"
    r"excerpt|paragraph|snippet)s?\b"
    r"|\bthe author\b|\bthe above\b|\b(?:mentioned|described|stated|discussed|listed|shown)\s+above\b",
    re.IGNORECASE,
)
_INTEGER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")
_FLOAT = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|[+-]?\.\d+(?:[eE][+-]?\d+)?")
_EXPRESSION_CHARS = re.compile(r"[0-9A-Za-z\u0370-\u03ff\u221a\u03c0]")
_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Da-d])[).:]\s+")
_GOLD_ALONE = re.compile(r"(?:option\s+)?\(?([A-Da-d])\)?[.:)]?", re.IGNORECASE)
_GOLD_PREFIX = re.compile(r"(?:option\s+)?\(?([A-D])[).:]\s")
_QUOTE_CHARS = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                              "\u2014": "-", "\u00a0": " "})


def _normal(text: str) -> str:
    """Case, width, typographic quotes and dashes, and whitespace folded, for the grounding check."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTE_CHARS).casefold()
    return " ".join(text.split())


def _word(value: object) -> str:
    return " ".join(str(value).strip().lower().replace("-", "_").split()).replace(" ", "_")


def _json_object(text: object) -> dict | Invalid:
    """The JSON object in a model output, or the Invalid that says why there is none."""
    if not isinstance(text, str):
        return Invalid("no_json", f"expected text, got {type(text).__name__}")
    try:
        return extract_json_object(text)
    except ExtractError as exc:
        return Invalid(exc.reason, exc.detail)


def parse_format_choice(text: str) -> tuple[str, str] | Invalid:
    """Read the format verdict: ("mcq", "mcq") or ("free_form", answer kind), or an Invalid."""
    obj = _json_object(text)
    if isinstance(obj, Invalid):
        return obj
    raw = obj.get("format", obj.get("type"))
    if raw is None:
        return Invalid("missing_field", "format")
    fmt = _FORMAT_WORDS.get(_word(raw))
    if fmt is None:
        return Invalid("unknown_format", str(raw)[:80])
    if fmt == "mcq":
        return ("mcq", "mcq")
    raw_kind = obj.get("answer_type")
    if raw_kind is None:
        return Invalid("missing_field", "answer_type")
    kind = _KIND_WORDS.get(_word(raw_kind))
    if kind is None or kind == "mcq":
        return Invalid("unknown_answer_type", str(raw_kind)[:80])
    return ("free_form", kind)


def _text_field(obj: dict, key: str, required: bool = True, numbers: bool = False) -> str | Invalid:
    """The stripped string under `key`; numbers become their text where `numbers` allows it."""
    if key not in obj or obj[key] is None:
        return Invalid("missing_field", key) if required else ""
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return Invalid("wrong_type", f"{key} is {type(value).__name__}")
    if not isinstance(value, str) and not numbers:
        return Invalid("wrong_type", f"{key} is {type(value).__name__}")
    return str(value).strip()


def _answer_matches(answer: str, kind: str) -> bool:
    """Whether a free-form gold answer has the shape its kind promises."""
    if kind == "integer":
        return _INTEGER.fullmatch(answer) is not None
    if kind == "float":
        return _FLOAT.fullmatch(answer) is not None
    if kind == "string":
        return len(answer.split()) <= MAX_STRING_WORDS
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for ch in answer:
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            if depth[closing[ch]] < 0:
                return False
    return not any(depth.values()) and _EXPRESSION_CHARS.search(answer) is not None


def _options(raw: object) -> tuple[str, ...] | Invalid:
    """Four distinct non-empty options from a list or an {"A": ..., ...} mapping, letter prefixes removed."""
    if isinstance(raw, dict):
        upper = {str(k).strip().upper(): v for k, v in raw.items()}
        if sorted(upper) != list(LETTERS):
            return Invalid("mcq_options", f"option keys {sorted(upper)[:6]}")
        raw = [upper[letter] for letter in LETTERS]
    if not isinstance(raw, list):
        return Invalid("wrong_type", f"options is {type(raw).__name__}")
    if len(raw) != 4:
        return Invalid("mcq_options", f"{len(raw)} options")
    if any(isinstance(o, (bool, list, dict)) or o is None for o in raw):
        return Invalid("wrong_type", "an option is not a string")
    options = tuple(_OPTION_PREFIX.sub("", str(o)).strip() for o in raw)
    if any(not o for o in options):
        return Invalid("mcq_options", "an option is empty")
    if any(_LABEL_ONLY.fullmatch(o) or not any(c.isalnum() for c in o) for o in options):
        return Invalid("mcq_options", "an option is only a letter label or punctuation")
    if len({_normal(o) for o in options}) != 4:
        return Invalid("mcq_options", "options are not distinct")
    if sum(_is_difficulty_label(o) for o in options) >= 2:  # one alone may be an answer ("hard" vs "soft")
        return Invalid("mcq_options", "options are difficulty labels (easy, medium, hard), not answers")
    return options


def _is_difficulty_label(option: str) -> bool:
    words = re.findall(r"[^\W\d_]+", option.casefold())
    return bool(words) and all(w in _DIFFICULTY_WORDS for w in words)


def _gold_letter(answer: str, options: tuple[str, ...]) -> str | Invalid:
    """The gold letter from "B", "(B)", "B) ...", "option b", or the exact text of one option."""
    alone = _GOLD_ALONE.fullmatch(answer)
    if alone:
        return alone.group(1).upper()
    same = [letter for letter, option in zip(LETTERS, options) if _normal(option) == _normal(answer)]
    if len(same) == 1:
        return same[0]
    prefixed = _GOLD_PREFIX.match(answer)
    if prefixed:
        return prefixed.group(1)
    return Invalid("mcq_gold_letter", answer[:80])


def _grounded(quote: str, document: Document, mode: str = "fuzzy") -> Invalid | None:
    """The grounding check: every part of the quote (split where it elides with "...") has at least
    MIN_QUOTE_CHARS characters and occurs in the document, in order: verbatim up to case, width,
    typographic quotes and spacing ("exact"), or aligned by rapidfuzz's partial_ratio at
    FUZZY_THRESHOLD or more ("fuzzy": "On October 7-8 at" for "On 7-8 October at"); "off" checks
    nothing."""
    if mode == "off":
        return None
    text = _normal(quote).strip("\"'")
    if not text:
        return Invalid("empty_quote")
    haystack, position = _normal(document.text), 0
    parts = [p.strip() for p in re.split(r"\.\.\.|\u2026", text) if p.strip()]
    if not parts:
        return Invalid("empty_quote")
    for part in parts:
        if len(part) < MIN_QUOTE_CHARS and part != haystack:
            return Invalid("quote_too_short", part[:40])
    for part in parts:
        found, end = haystack.find(part, position), -1
        if found >= 0:
            end = found + len(part)
        elif mode == "fuzzy" and len(part) <= MAX_FUZZY_CHARS:
            from rapidfuzz import fuzz

            aligned = fuzz.partial_ratio_alignment(part, haystack[position:], score_cutoff=FUZZY_THRESHOLD)
            end = -1 if aligned is None else position + aligned.dest_end
        if end < 0:
            return Invalid("quote_not_in_document", quote[:120])
        position = end
    return None


_NUMBER_IN_TEXT = re.compile(r"(?<![\w.,])[+-]?\d[\d,]*(?:\.\d+)?(?![\w]|[.,]\d)")


def _answer_in_question(answer: str, kind: str, question: str) -> bool:
    """Whether the question states its gold answer where that is certain: a string answer of several
    words as words of the question, or a number of two digits or more as a number of the question."""
    if kind == "string":
        words = _normal(answer).split()
        return len(words) >= 2 and re.search(r"(?<!\w)" + re.escape(" ".join(words)) + r"(?!\w)",
                                              _normal(question)) is not None
    value = answer.replace(",", "").lstrip("+")
    numeric = kind in ("integer", "float") or (kind == "expression" and _FLOAT.fullmatch(answer) is not None)
    if not numeric or sum(c.isdigit() for c in value) < 2:
        return False
    return any(m.group().replace(",", "").lstrip("+") == value for m in _NUMBER_IN_TEXT.finditer(question))


def _shares_a_word(text: str, quote: str) -> bool:
    """Whether `text` (the question and its gold answer) holds a word of four letters or more, or a number
    of two digits or more, that the quote holds too (case-folded): the least a question about its quote
    must do, which a question unrelated to the document fails."""
    quoted = {w.casefold() for w in _CONTENT_WORD.findall(quote.translate(_QUOTE_CHARS))}
    return any(w.casefold() in quoted for w in _CONTENT_WORD.findall(text.translate(_QUOTE_CHARS)))


def _canonical_integer(answer: str) -> str:
    """"1,234" -> "1234", "+007" -> "7", "-0" -> "0", without int() (which refuses over 4300 digits)."""
    digits = answer.replace(",", "")
    sign = "-" if digits.startswith("-") else ""
    digits = digits.lstrip("+-").lstrip("0") or "0"
    return ("" if digits == "0" else sign) + digits


def parse_task(completion_text: str, document: Document, kind: str | None = None,
               grounding: str = "fuzzy") -> Task | Invalid:
    """Validate a challenger output for `document` into a Task, or name why it is unusable. `kind`
    (one of ANSWER_KINDS) is what was asked for; None infers it from the JSON. `grounding` (one of
    GROUNDING_MODES) is how the quote must match the document. Never raises on text."""
    if kind is not None:
        _check_kind(kind)
    if grounding not in GROUNDING_MODES:
        raise ValueError(f"grounding {grounding!r} is not one of {GROUNDING_MODES}")
    obj = _json_object(completion_text)
    if isinstance(obj, Invalid):
        return obj
    stated = obj.get("answer_type")
    stated_kind = _KIND_WORDS.get(_word(stated)) if isinstance(stated, (str, int, float)) else None
    if kind is None:
        if "options" in obj:
            kind = "mcq"
        elif stated is None:
            return Invalid("missing_field", "answer_type (or options)")
        elif stated_kind is None or stated_kind == "mcq":
            return Invalid("unknown_answer_type", str(stated)[:80])
        else:
            kind = stated_kind
    elif kind != "mcq" and stated is not None and stated_kind != kind:
        return Invalid("kind_mismatch", f"asked for {kind}, answer_type is {str(stated)[:40]!r}")
    fields = {}
    for key, required in (("question", True), ("answer", True), ("quote", True), ("solution", False),
                          ("difficulty", False)):
        value = _text_field(obj, key, required, numbers=key in ("answer", "difficulty"))
        if isinstance(value, Invalid):
            return value
        fields[key] = value
    if not fields["question"]:
        return Invalid("empty_question")
    if not fields["answer"]:
        return Invalid("empty_answer")
    options: tuple[str, ...] = ()
    answer = fields["answer"]
    if kind == "mcq":
        if "options" not in obj:
            return Invalid("missing_field", "options")
        options = _options(obj["options"])
        if isinstance(options, Invalid):
            return options
        answer = _gold_letter(answer, options)
        if isinstance(answer, Invalid):
            return answer
    elif not _answer_matches(answer, kind):
        return Invalid("answer_type_mismatch", f"{kind} answer {answer[:60]!r}")
    elif kind == "integer":
        answer = _canonical_integer(answer)
    if len(_WORDS.findall(fields["question"])) < MIN_QUESTION_WORDS:
        return Invalid("question_too_short", fields["question"][:60])
    if _REFERS.search(fields["question"]):
        return Invalid("refers_to_document", _REFERS.search(fields["question"]).group(0))
    if kind != "mcq" and _answer_in_question(answer, kind, fields["question"]):
        return Invalid("answer_in_question", answer[:60])
    ungrounded = _grounded(fields["quote"], document, grounding)
    if ungrounded is not None:
        return ungrounded
    gold_text = options[LETTERS.index(answer)] if kind == "mcq" else answer
    if grounding != "off" and not _shares_a_word(f"{fields['question']} {gold_text}", fields["quote"]):
        return Invalid("question_off_quote", fields["question"][:60])
    return Task(question=fields["question"], answer=answer, kind=kind, doc_id=document.id, options=options,
                quote=fields["quote"], solution=fields["solution"], difficulty=fields["difficulty"])


def reason_counts(results: Iterable[Task | Invalid]) -> dict[str, int]:
    """Counts of "valid" and of every invalid reason (zeros included), for per-iteration metrics."""
    counts = dict.fromkeys(("valid", *INVALID_REASONS), 0)
    for result in results:
        key = "valid" if isinstance(result, Task) else result.reason
        counts[key] = counts.get(key, 0) + 1
    return counts
