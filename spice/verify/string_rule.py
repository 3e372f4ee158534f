"""The short-string rule for answers of kind "string": equal up to case, spacing, punctuation and a
leading article; two different plain-word strings or names with digits are different (mirrors the
string verdict of csrc/verify_verdict.cpp)."""

from __future__ import annotations

import re

from spice.verify.chars import utf8_len
from spice.verify.normalize import compact, normalize_answer, string_canonical

MAX_ANSWER_BYTES = 1024  # longer answers skip the string rule and go straight to math-verify


def string_rule(answer: str, gold: str) -> bool | None:
    """The short-string rule: equal up to case, spacing, punctuation and a leading article is correct;
    two different plain-word strings are wrong; anything else is for math-verify (None)."""
    if max(utf8_len(answer), utf8_len(gold)) > MAX_ANSWER_BYTES:
        return None
    a, g = normalize_answer(answer), normalize_answer(gold)
    if not a[0] or not g[0]:
        return None
    if a[1:] == g[1:] and compact(a[0]) == compact(g[0]):
        return True
    ca, cg = string_canonical(a[0]), string_canonical(g[0])
    if ca and ca == cg:
        return True
    no_digit = not any(c.isascii() and c.isdigit() for c in ca + cg)
    if ca and no_digit and ca.replace(" ", "") == cg.replace(" ", ""):
        return True
    if re.fullmatch(r"[a-z ]+", ca) and re.fullmatch(r"[a-z ]+", cg):
        return False
    if _is_name_with_digits(a[0], ca) and _is_name_with_digits(g[0], cg) and ca.replace(" ", "") != cg.replace(" ", ""):
        return False  # names with digits ("K2", "Apollo 11")
    return None


def _is_name_with_digits(text: str, canonical: str) -> bool:
    """Letters, digits and spaces after canonicalisation, with a letter, written without math syntax."""
    return (not any(c in "\\^_{}=+*/()<>|" for c in text) and re.fullmatch(r"[a-z0-9 ]+", canonical) is not None
            and any("a" <= c <= "z" for c in canonical))
