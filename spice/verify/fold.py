"""Unicode look-alikes folded before any rule reads an answer: compatibility forms by NFKC (fullwidth
digits and letters, mathematical alphanumerics), superscripts and subscripts as ^{..} and _{..} (NFKC
would turn "2²" into "22"), and Cyrillic (for MCQ letters also Greek) capitals that look like Latin
ones, so that "\\boxed{A, В}" with a Cyrillic В names two options, not one."""

from __future__ import annotations

import re
import unicodedata

_SUPER = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿ", "0123456789+-=()n"))
_SUB = dict(zip("₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎", "0123456789+-=()"))
_CYRILLIC = dict(zip("АВСЕНІЈКМОРТХЅаосеірјхуѕ", "ABCEHIJKMOPTXSaoceipjxys"))
_GREEK_CAPITALS = dict(zip("ΑΒΕΗΙΚΜΝΟΡΤΧΥΖ", "ABEHIKMNOPTXYZ"))
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _fold_char(c: str, letters: dict[str, str]) -> str:
    if c in letters:
        return letters[c]
    folded = unicodedata.normalize("NFKC", c)
    return c if "\u2044" in folded else folded  # vulgar fractions stay: "1½" is not "11/2"


def _fold_run(run: str, letters: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(run):
        for table, mark in ((_SUPER, "^"), (_SUB, "_")):
            j = i
            while j < len(run) and run[j] in table:
                j += 1
            if j > i:
                out.append(mark + "{" + "".join(table[c] for c in run[i:j]) + "}")
                i = j
                break
        else:
            out.append(_fold_char(run[i], letters))
            i += 1
    return "".join(out)


def fold_unicode(text: str, mcq: bool = False) -> str:
    """`text` with look-alikes folded to ASCII as above; ASCII text is returned as it is."""
    if text.isascii():
        return text
    letters = {**_CYRILLIC, **_GREEK_CAPITALS} if mcq else _CYRILLIC
    return _NON_ASCII.sub(lambda m: _fold_run(m.group(), letters), text)
