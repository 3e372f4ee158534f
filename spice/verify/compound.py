"""Answers made of several parts, and the gold's own spelling, settled before the verdict engines:
several boxed values must each be right (they form the gold's set when it has several elements, and
one of them wrong or disagreeing with the others is wrong); `or`-joined alternatives are a set, never
a hedge that collects the reward for one of them; a gold written with a decimal comma ("1,22", "0,111")
is a decimal, while "1,000" stays one thousand; a reply restating the question's expression is no answer."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from spice.verify.chars import as_text
from spice.verify.extract import MAX_SCAN_CHARS, all_boxed, extract_answer, parse_letter
from spice.verify.fold import fold_unicode
from spice.verify.frame import pathological
from spice.verify.normalize import compact, normalize_answer

MAX_PARTS = 8  # more boxed values or alternatives than this is no final answer
MIN_RESTATED_CHARS = 3  # a shorter expression copied from the question ("17") is not a restatement

_DECIMAL_COMMA = re.compile(r"(-?)([0-9]+),([0-9]+)")
_OR = re.compile(r"\\(?:text|textrm|mathrm|mbox)\s*\{\s*or\s*\}|\\(?:lor|vee)(?![A-Za-z])|(?<![A-Za-z\\])or(?![A-Za-z])")
_THOUSANDS = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:[.,][0-9]+)*")
_OPERATOR = re.compile(r"[-+*/^]|\\(?:times|cdot|div|frac|sqrt)(?![A-Za-z])")
_CONTINUES = re.compile(r"[A-Za-z0-9+\-*/^_{}()\[\]\\.]")


@dataclass(frozen=True)
class Plan:
    """How one (response, gold, kind) is judged: a verdict already, or atomic items and how their
    verdicts combine."""

    verdict: bool | None
    items: tuple[tuple[str, str, str], ...] = ()
    combine: Callable[[Sequence[bool]], bool] = all


def decimal_comma_gold(gold: str) -> str:
    """'1,22' -> '1.22' and '0,111' -> '0.111'; '1,000' and '12,345' stay (digit groups never start with 0)."""
    m = _DECIMAL_COMMA.fullmatch(gold.strip())
    if m is None:
        return gold
    sign, whole, part = m.groups()
    if len(part) != 3 or whole.lstrip("0") == "":
        return f"{sign}{whole}.{part}"
    return gold


def _top_level_split(s: str, pattern: re.Pattern) -> list[str]:
    """`s` split at matches of `pattern` outside any bracket."""
    spans = {m.start(): m.end() for m in pattern.finditer(s)}
    if not spans:
        return [s.strip()]
    depth, parts, start = 0, [], 0
    i = 0
    while i < len(s):
        if depth == 0 and i in spans:
            parts.append(s[start:i])
            start = i = spans[i]
            continue
        if s[i] in "({[":
            depth += 1
        elif s[i] in ")}]":
            depth -= 1
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _unbraced(s: str) -> str:
    s = s.strip()
    for left, right in (("\\{", "\\}"), ("\\left\\{", "\\right\\}"), ("{", "}")):
        if s.startswith(left) and s.endswith(right) and "," in s:
            return s[len(left):-len(right)].strip()
    return s


def gold_parts(gold: str) -> list[str]:
    """The elements of a gold set or list ("{1,2,3}", "(2,1),(1,2)", "k = 45, n = 2", "3 or 5"); one
    element for anything else (a tuple "(1,2)", an interval, "1,000")."""
    if _THOUSANDS.fullmatch(gold.strip()):
        return [gold]
    inner = _unbraced(gold)
    parts = [q for p in _top_level_split(inner, _OR) for q in _top_level_split(p, re.compile(r","))]
    parts = [p for p in parts if p and p.lower() != "and"]
    return parts or [gold]


def _matched(ok: Sequence[bool], rows: int, cols: int) -> bool:
    """A perfect matching of answers to gold parts, `ok` being the row-major table of verdicts."""
    owner: list[int] = [-1] * cols

    def place(r: int, seen: set[int]) -> bool:
        for c in range(cols):
            if ok[r * cols + c] and c not in seen:
                seen.add(c)
                if owner[c] < 0 or place(owner[c], seen):
                    owner[c] = r
                    return True
        return False

    return rows == cols and all(place(r, set()) for r in range(rows))


def _restates(answer: str, question: str) -> bool:
    """An expression of the question with an operator, copied whole as the answer (not a part of a
    longer expression there: "3x^2" of "f(x) = 3x^2 + 1" is an honest answer)."""
    a = compact(normalize_answer(answer)[0])
    if len(a) < MIN_RESTATED_CHARS or _PLAIN_NUMBER.fullmatch(a) or not _OPERATOR.search(a):
        return False
    q = compact(normalize_answer(question)[0])
    for m in re.finditer(re.escape(a), q):
        before = q[m.start() - 1] if m.start() > 0 else " "
        after = q[m.end()] if m.end() < len(q) else " "
        if not _CONTINUES.match(before) and not _CONTINUES.match(after):
            return True
    return False


def plan(response: object, gold: object, kind: str, question: str | None = None) -> Plan:
    """The Plan for one item; `question`, when known, refuses answers that restate it."""
    text = fold_unicode(as_text(response)[-MAX_SCAN_CHARS:], mcq=kind == "mcq")
    gold = fold_unicode(as_text(gold), mcq=kind == "mcq")
    boxes = all_boxed(text)
    if kind == "mcq":
        if len({parse_letter(b) for b in boxes}) > 1:
            return Plan(False)  # boxes naming different letters (or a letter and no letter)
        return Plan(None, ((text, gold, kind),))
    if any(pathological(b) for b in boxes):
        return Plan(False)  # bounded cost: refused before any engine reads it
    distinct = list(dict.fromkeys(boxes))
    if len(distinct) > 1:
        distinct = list({compact(normalize_answer(b)[0]): b for b in distinct}.values())
    if len(distinct) > 1:
        answers = distinct
    else:
        answer = extract_answer(text, kind)
        if answer is None:
            return Plan(None, ((text, gold, kind),))
        if pathological(answer):
            return Plan(False)
        if question is not None and kind != "string" and compact(normalize_answer(answer)[0]) != compact(
                normalize_answer(gold)[0]) and _restates(answer, fold_unicode(question)):
            return Plan(False)
        answers = _top_level_split(answer, _OR) if kind != "string" else [answer]
        golds_or = _top_level_split(gold, _OR) if kind != "string" else [gold]
        if len(answers) == 1 and len(golds_or) == 1:
            if kind in ("float", "expression") and "," not in answer:
                gold = decimal_comma_gold(gold)  # one number against "1,22": a decimal comma, not a pair
            return Plan(None, ((text, gold, kind),))
    answers = [a for a in answers if a]
    golds = gold_parts(gold) if kind != "string" else [gold]
    if not answers or len(answers) > MAX_PARTS or len(golds) > MAX_PARTS:
        return Plan(False)
    if len(golds) == 1:
        return Plan(None, tuple(("\\boxed{" + a + "}", gold, kind) for a in answers), all)
    if len(answers) != len(golds):
        return Plan(False)
    items = tuple(("\\boxed{" + a + "}", g, kind) for a in answers for g in golds)
    return Plan(None, items, lambda ok: _matched(ok, len(answers), len(golds)))
