"""Normalisation of an answer or a gold answer (mirrors csrc/verify_normalize.cpp; tests compare the
two), the canonical form of the string rule, and the cleaning of spellings math-verify misreads."""

from __future__ import annotations

import re

from spice.verify.chars import ASCII_LOWER, WS, is_alnum, is_alpha


def _replace(s: str, old: str, new: str) -> tuple[str, bool]:
    if old.startswith("\\") and len(old) > 1 and is_alpha(old[-1]):
        out, count = re.subn(re.escape(old) + r"(?![A-Za-z])", lambda _: new, s)
        return out, count > 0
    return s.replace(old, new), old in s


_UNWRAP = ("\\text{", "\\textbf{", "\\textrm{", "\\textit{", "\\mathrm{", "\\mathbf{", "\\mathit{", "\\mbox{",
           "\\boxed{", "\\fbox{", "\\operatorname{")


def _unwrap_one(s: str) -> str | None:
    i = s.find("\\")
    while i >= 0:
        for w in _UNWRAP:
            if not s.startswith(w, i):
                continue
            start = i + len(w) - 1
            depth = 0
            for j in range(start, len(s)):
                if s[j] == "{":
                    depth += 1
                elif s[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return s[:i] + s[start + 1:j] + s[j + 1:]
        i = s.find("\\", i + 1)
    return None


def _collapse(s: str) -> str:
    return re.sub(r"[ \t\n\r\f\v]+", " ", s).strip(" ")


def normalize_answer(s: str) -> tuple[str, bool, bool]:
    """(text, percent removed, degree removed): LaTeX wrappers, spacing, currency, degrees, percent and
    trailing punctuation removed; the same steps as the C++ `normalize_math`."""
    for old, new in (("\u00a0", " "), ("\u2009", " "), ("\u202f", " "), ("\u2212", "-"), ("\\$", ""), ("$", "")):
        s, _ = _replace(s, old, new)
    degree = percent = False
    for deg in ("^{\\circ}", "^\\circ", "\\degree", "\\circ", "\u00b0"):
        s, hit = _replace(s, deg, "")
        degree = degree or hit
    for pct in ("\\%", "%"):
        s, hit = _replace(s, pct, "")
        percent = percent or hit
    for old, new in (("\\left.", ""), ("\\right.", ""), ("\\left", ""), ("\\right", ""), ("\\displaystyle", ""),
                     ("\\qquad", ""), ("\\quad", ""), ("\\!", ""), ("\\;", ""), ("\\:", ""), ("\\dfrac", "\\frac"),
                     ("\\tfrac", "\\frac"), ("{,}", ","), ("\\thinspace", " "), ("\\,", " "), ("\\ ", " "),
                     ("~", " ")):
        s, _ = _replace(s, old, new)
    for _ in range(64):
        unwrapped = _unwrap_one(s)
        if unwrapped is None:
            break
        s = unwrapped
    return _collapse(s).rstrip(" .,;:!?"), percent, degree


def compact(s: str) -> str:
    """Spaces dropped, but those before a letter or '.' and those between two alphanumerics."""
    return "".join(c for i, c in enumerate(s)
                   if c != " " or (i < len(s) - 1 and (is_alpha(s[i + 1]) or s[i + 1] == "." or
                                                       (i > 0 and is_alnum(s[i - 1]) and is_alnum(s[i + 1])))))


def string_canonical(s: str) -> str:
    chars = [c if not c.isascii() else (c.translate(ASCII_LOWER) if is_alnum(c) or c in WS else " ") for c in s]
    out = _collapse("".join(chars))
    for article in ("the ", "an ", "a "):
        if len(out) > len(article) and out.startswith(article):
            return out[len(article):]
    return out


_GROUP_SPACE = re.compile(r"(?<=[0-9])(?:\\,|\\ |\\thinspace|~|[ \u00a0\u2009\u202f])(?=[0-9]{3}(?![0-9]))")


def clean_for_math_verify(s: str) -> str:
    """Spellings math-verify misreads: digit groups split by (thin) spaces, a degree sign, a trailing full stop."""
    s = _GROUP_SPACE.sub("", s.replace("\u00b0", "^\\circ"))
    return s.strip(WS).rstrip(".,;:!? \t\n\r\f\v")
