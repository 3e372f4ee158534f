"""Final-answer extraction from a reasoner response (mirrors csrc/verify_extract.cpp; tests compare the
two). An MCQ letter counts only as the reply's single stated answer: boxed, after an answer marker, or
the whole reply; never as the last "(X)" somewhere, nor when the statement names another option."""

from __future__ import annotations

import re

from spice.verify.chars import (
    ASCII_LOWER,
    WS,
    as_text,
    is_alnum,
    is_alpha,
    is_choice,
    is_upper_choice,
    utf8_len,
)

MAX_SCAN_CHARS = 32768  # only the tail of a response is scanned for its answer (the C++ side caps the same)
MAX_PHRASE_BYTES = 256  # a "the answer is ..." text longer than this is not taken as an answer

_BOX_RE = re.compile(r"\\(?:boxed|fbox)[ \t\n\r\f\v]*\{")
_BRACE_RE = re.compile(r"[{}]")
_ANSWER_RE = re.compile(r"answer", re.IGNORECASE | re.ASCII)
_MCQ_MARKER_RE = re.compile(r"(?=(answer|choice|option))", re.IGNORECASE | re.ASCII)
_NUMBER_RE = re.compile(r"-?[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?")
_LETTER_WRAPPERS = ("\\text{", "\\textbf{", "\\mathrm{", "\\mathbf{", "\\textrm{")


def _closing_braces(text: str) -> dict[int, int]:
    """Position of each '{' that closes -> position of its '}'."""
    close: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            close[stack.pop()] = m.start()
    return close


def all_boxed(text: str) -> list[str]:
    """Contents of every balanced \\boxed{...} / \\fbox{...} not inside another one, in order, stripped."""
    close = _closing_braces(text)
    out, end = [], -1
    for m in _BOX_RE.finditer(text):
        j = m.end() - 1
        if j in close and m.start() > end:
            out.append(text[j + 1:close[j]].strip(WS))
            end = close[j]
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text` with balanced braces; None if absent."""
    close = _closing_braces(text)
    best = None
    for m in _BOX_RE.finditer(text):
        j = m.end() - 1
        if j in close:
            best = (j, close[j])
    return None if best is None else text[best[0] + 1:best[1]].strip(WS)


def _word_at(t: str, i: int, e: int, word: str) -> bool:
    k = i + len(word)
    return (t[i:k].translate(ASCII_LOWER) == word and k <= e and (i == 0 or not is_alnum(t[i - 1]))
            and (k == len(t) or not is_alnum(t[k])))


def names_another_choice(t: str, b: int, e: int, letter: str) -> bool:
    """Whether the text right after a stated letter, t[b:e], names another option: "(C)", "C)", or a
    letter after "or", "and", ',', '/' or '&' ("A) or B)", "(A) (B)"; a bare "I" only as "I)", the
    pronoun being common). A later mention ("because (A) is too small") is no second answer."""
    n, j = len(t), b
    while j < e and t[j] in WS:
        j += 1
    if j < e and t[j] in ",/&":
        j += 1
    elif _word_at(t, j, e, "or"):
        j += 2
    elif _word_at(t, j, e, "and"):
        j += 3
    while j < e and t[j] in WS:
        j += 1
    if j < e and t[j] == "(":
        j += 1
    return (j < e and is_upper_choice(t[j]) and t[j] != letter and (j + 1 == n or not is_alnum(t[j + 1]))
            and (t[j] != "I" or (j + 1 < n and t[j + 1] == ")")))


def parse_letter(content: str) -> str | None:
    """An MCQ letter from "B", "(B)", "B)", "B.", "(B) text", "\\text{B}"; None otherwise, or when the
    text names another option too ("(A) or (B)")."""
    v = content.replace("$", "").strip(WS)
    for _ in range(4):
        for w in _LETTER_WRAPPERS:
            if len(v) > len(w) and v.startswith(w) and v.endswith("}"):
                v = v[len(w):-1].strip(WS)
                break
        else:
            break
    if not v:
        return None
    if len(v) >= 3 and v[0] == "(" and is_choice(v[1]) and v[2] == ")":
        letter, after = v[1].upper(), 3
    elif is_choice(v[0]) and (len(v) == 1 or (v[1] in ").:" and (len(v) == 2 or v[2] in WS))):
        letter, after = v[0].upper(), 1 if len(v) == 1 else 2
    else:
        return None
    return None if names_another_choice(v, after, len(v), letter) else letter


def _marker_end(t: str, p: int) -> int:
    if p > 0 and is_alpha(t[p - 1]):
        return -1
    n, q = len(t), p + 6
    while q < n and t[q] in WS:
        q += 1
    if q < n and t[q] == ":":
        return q + 1
    if q + 1 < n and t[q] in "iI" and t[q + 1] in "sS" and (q + 2 == n or not is_alnum(t[q + 2])):
        q += 2
        while q < n and t[q] in WS:
            q += 1
        return q + 1 if q < n and t[q] == ":" else q
    return -1


def _last_marker(t: str, mcq: bool = False) -> int:
    """End of the last "answer:" / "answer is" / "answer is:" marker, or -1; for MCQ replies also
    "choice is" / "option is"."""
    for m in reversed(list((_MCQ_MARKER_RE if mcq else _ANSWER_RE).finditer(t))):
        end = _marker_end(t, m.start())
        if end >= 0:
            return end
    return -1


def _statement_end(t: str, q: int) -> int:
    """End of the statement starting at `q`: the line end, or '.', '!', '?', ';' before a space or the end."""
    n = len(t)
    end = t.find("\n", q)
    end = n if end < 0 else end
    for j in range(q, end):
        if t[j] in ".!?;" and (j + 1 == n or t[j + 1] in WS):
            return j
    return end


def _phrase_answer(t: str) -> str | None:
    q = _last_marker(t)
    if q < 0:
        return None
    n = len(t)
    while q < n and t[q] in WS:
        q += 1
    a = t[q:_statement_end(t, q)].strip(WS)
    if not a or utf8_len(a) > MAX_PHRASE_BYTES:
        return None
    return a


def _mcq_from_text(t: str) -> str | None:
    n, q = len(t), _last_marker(t, mcq=True)
    if q >= 0:
        while q < n and t[q] in WS:
            q += 1
        if t[q:q + 6].translate(ASCII_LOWER) in ("option", "choice"):
            r = q + 6
            if r < n and t[r] in WS:
                while r < n and t[r] in WS:
                    r += 1
                q = r
        if q + 2 < n and t[q] == "(" and is_upper_choice(t[q + 1]) and t[q + 2] == ")":
            letter, after = t[q + 1], q + 3
        elif q < n and is_upper_choice(t[q]) and (q + 1 == n or not is_alnum(t[q + 1])):
            letter, after = t[q], q + 2 if q + 1 < n and t[q + 1] in "):" else q + 1
        else:
            return None
        return None if names_another_choice(t, after, _statement_end(t, q), letter) else letter
    s = t.strip(WS)
    if (len(s) == 1 or (len(s) == 2 and s[1] == ".")) and is_upper_choice(s[0]):
        return s[0]
    return None


def extract_answer(response: str, kind: str) -> str | None:
    """The final answer of a response: the last balanced \\boxed{}/\\fbox{}, else the text after the last
    "the answer is"/"answer:", else (integer/float) the last number; for "mcq" the letter A-J. Only the
    last MAX_SCAN_CHARS characters are scanned. None when there is no answer."""
    text = as_text(response)[-MAX_SCAN_CHARS:]
    box = last_boxed(text)
    if kind == "mcq":
        return parse_letter(box) if box is not None else _mcq_from_text(text)
    if box is not None:
        return box or None
    phrase = _phrase_answer(text)
    if phrase is not None:
        return phrase
    if kind in ("integer", "float"):
        numbers = _NUMBER_RE.findall(text)
        return numbers[-1] if numbers else None
    return None
