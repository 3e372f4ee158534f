"""Find the first JSON object in free model output and repair the usual small-model slips
(code fences, prose around it, single quotes, trailing commas, Python literals, LaTeX backslashes)."""

from __future__ import annotations

import json
import re

MAX_SCAN_CHARS = 100_000  # challenger outputs are bounded by max_new_tokens; longer input is cut here

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?")
_VALID_ESCAPES = set('"\\/bfnrtu')
# LaTeX commands whose backslash a model writes unescaped inside a JSON string and that would
# otherwise be read as the JSON escapes \b \f \n \r \t (e.g. "\frac" -> form feed + "rac").
_LATEX_WORDS = re.compile(
    r"(?:frac|dfrac|tfrac|times|theta|tau|tan|tanh|text|textbf|textit|to|top|neq|nu|nabla|ne|not|"
    r"rightarrow|right|rho|rm|beta|bar|binom|boxed|begin|bmod|big|forall|flat|fbox|nearrow)(?![a-zA-Z])"
)


class ExtractError(Exception):
    """Why no object could be read; `reason` is one of "no_json", "truncated", "malformed_json"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _object_spans(text: str) -> list[tuple[int, int | None]]:
    """Spans [start, end) of top-level {...} objects, string-aware for both quote styles; `end` is
    None for an object still open when the text ends."""
    spans: list[tuple[int, int | None]] = []
    depth, start, quote, escaped = 0, -1, "", False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch == '"' or (ch == "'" and depth > 0 and _opens_single_quoted(text, i)):
            if depth > 0:
                quote = ch
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
    if depth > 0:
        spans.append((start, None))
    return spans


def _opens_single_quoted(text: str, i: int) -> bool:
    """A single quote starts a string only where JSON expects a value or key, not as an apostrophe."""
    j = i - 1
    while j >= 0 and text[j] in " \t\r\n":
        j -= 1
    return j >= 0 and text[j] in "{[,:"


def _to_json(candidate: str) -> str:
    """Rewrite single-quoted strings, bad escapes, trailing commas and Python literals as JSON."""
    out: list[str] = []
    i, n = 0, len(candidate)
    while i < n:
        ch = candidate[i]
        if ch == '"' or (ch == "'" and _opens_single_quoted(candidate, i)):
            i = _copy_string(candidate, i, out)
            continue
        if ch == ",":
            j = i + 1
            while j < n and candidate[j] in " \t\r\n":
                j += 1
            if j < n and candidate[j] in "}]":
                i += 1
                continue
        word = re.match(r"True|False|None", candidate[i:i + 5])
        if word and (i == 0 or not candidate[i - 1].isalnum()):
            out.append({"True": "true", "False": "false", "None": "null"}[word.group(0)])
            i += len(word.group(0))
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _copy_string(text: str, i: int, out: list[str]) -> int:
    """Copy the string literal starting at `i` as a double-quoted JSON string; return the index after it."""
    quote = text[i]
    out.append('"')
    i += 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "'":
                out.append("'")
                i += 2
            elif nxt in _VALID_ESCAPES and not _LATEX_WORDS.match(text, i + 1):
                out.append(ch + nxt)
                i += 2
            else:  # a LaTeX command or an invalid escape: keep the backslash literally
                out.append("\\\\")
                i += 1
            continue
        if ch == quote:
            out.append('"')
            return i + 1
        out.append('\\"' if ch == '"' else ch)
        i += 1
    return i


_KEYS = ("question", "answer", "quote", "options", "format", "answer_type")
MAX_OBJECTS = 20  # objects tried per output


def _integer(digits: str) -> int | str:
    """A JSON integer; one too long for int() (over 4300 digits) stays its text, so no output raises."""
    return int(digits) if len(digits) <= 4000 else digits


def extract_json_object(text: str) -> dict:
    """Return the JSON object in `text` that holds most of the keys a reply should have (the first
    among equals); raise ExtractError naming why none could be read."""
    text = _FENCE.sub("", text[:MAX_SCAN_CHARS])
    spans = _object_spans(text)[:MAX_OBJECTS]
    if not spans:
        raise ExtractError("no_json", "no '{' in the output")
    found: list[dict] = []
    last_error = ""
    for start, end in spans:
        if end is None:
            if found:
                break
            raise ExtractError("truncated", f"object opened at char {start} is never closed")
        candidate = text[start:end]
        for attempt in (_to_json(candidate), candidate):
            try:
                value = json.loads(attempt, strict=False, parse_int=_integer)
            except (ValueError, RecursionError) as exc:
                last_error = str(exc)
                continue
            if isinstance(value, dict):
                found.append(value)
            break
    if found:
        return max(found, key=lambda obj: sum(key in obj for key in _KEYS))
    raise ExtractError("malformed_json", last_error[:200])
