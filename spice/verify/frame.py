"""What is decided or rewritten before math-verify sees an answer: pathological inputs are refused
(length, nesting, exponent towers, huge numbers: bounded cost), and spellings that math-verify reads
against the mathematics are settled here. math-verify reads `(2)(3)` as 5, `2 3` as 5 and `2a b` as 2;
spice reads `(2)(3)` as the product 6, refuses `2 3` (no number is written so) and reads single
letters as variables, so `2a b` is not a number."""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 1024  # a longer answer or gold is no final answer
MAX_NESTING = 24  # brackets nested deeper than this
MAX_NUMBER_DIGITS = 200  # a digit run longer than this
MAX_EXPONENT_DIGITS = 3  # 10^{1000} and above

_COMMAND = re.compile(r"\\[A-Za-z]+")
_TEXT_GROUP = re.compile(r"\\(?:text|textrm|textbf|mathrm|mbox|operatorname)\s*\{[^{}]*\}")
_ASSIGNMENT = re.compile(r"^\s*[A-Za-z]\s*=")
_MONOMIAL = re.compile(r"[-+]?\s*([0-9]+(?:\.[0-9]+)?|\\sqrt\{[0-9]+\}|\\frac\{[0-9]+\}\{[0-9]+\})?\s*"
                       r"((?:(?<![A-Za-z])[A-Za-z](?![A-Za-z])\s*)+)")
_UNIT_LETTERS = frozenset("mgsLKAVWNJhl")  # math-verify's unit rule drops these after a number
_FINAL_UNIT = re.compile(r"[0-9]\s*([A-Za-z])\s*$")
_DIGIT_GROUPS = re.compile(r"(?<![0-9.,])[0-9]+(?:[ \t]+[0-9]+)+(?![0-9]*\s*/)")
_PRODUCT = re.compile(r"(?<=[0-9)}])\s*(?=\()|(?<=\\pi)\s*(?=\()|(?<=\))\s*(?=[0-9])")
_JUXTAPOSED = re.compile(r"(?<=[A-Za-z0-9}])\s+(?=[A-Za-z](?![A-Za-z]))")
_LN_NUMBER = re.compile(r"\\ln\s*([0-9]+(?:\.[0-9]+)?)(?![0-9.A-Za-z^{(])")
_DECIMAL = re.compile(r"(?<![0-9.])([0-9]+)\.([0-9]+)(?![0-9.])")
_DIGITS = re.compile(r"[0-9]+")
_SPACED_DIGITS = re.compile(r"[0-9.]\s+[0-9.]")
_BIG_FACTORIAL = re.compile(r"[0-9]{3,}\s*!")


def _exponent_tower(s: str) -> bool:
    """A power inside an exponent (9^{9^9}, 9^9^9), or an exponent of more than MAX_EXPONENT_DIGITS digits."""
    for m in re.finditer(r"\^", s):
        i = m.end()
        while i < len(s) and s[i] == " ":
            i += 1
        if i < len(s) and s[i] == "{":
            depth, j = 0, i
            while j < len(s):
                depth += s[j] == "{"
                depth -= s[j] == "}"
                if depth == 0:
                    break
                j += 1
            exponent = s[i + 1:j]
        else:
            exponent = _DIGITS.match(s, i).group() if _DIGITS.match(s, i) else s[i:i + 1]
            if s[i + len(exponent):].lstrip(" ").startswith("^"):
                return True
        if "^" in exponent or "**" in exponent:
            return True
        digits = exponent.strip(" +-")
        if digits.isdigit() and len(digits) > MAX_EXPONENT_DIGITS:
            return True
    return False


def _nesting(s: str) -> int:
    depth = deepest = 0
    for c in s:
        if c in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")}]":
            depth = max(0, depth - 1)
    return deepest


def pathological(s: str) -> str | None:
    """Why `s` is refused before math-verify (its cost is unbounded or it is no answer), or None."""
    if len(s) > MAX_ANSWER_CHARS:
        return "too long"
    if _nesting(s) > MAX_NESTING:
        return "nested too deep"
    if any(len(m.group()) > MAX_NUMBER_DIGITS for m in _DIGITS.finditer(s)):
        return "huge number"
    if _BIG_FACTORIAL.search(s) or _exponent_tower(s):
        return "huge power"
    return None


def _thousands(run: str) -> bool:
    groups = run.split()
    return 1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])


def _monomial_in_variables(s: str) -> bool:
    """A nonzero coefficient times single-letter variables ("2a b", "5 x", "3t", "\\sqrt{2} m"), which
    is no number; e, E and i are numbers, and one unit letter after a number is math-verify's unit."""
    s = _ASSIGNMENT.sub("", _TEXT_GROUP.sub(" ", s)).strip()
    unit = _FINAL_UNIT.search(s)
    if unit and unit.group(1) in _UNIT_LETTERS:
        s = s[:unit.start(1)].strip()
    m = _MONOMIAL.fullmatch(s)
    if m is None or not re.search(r"[A-DF-HJ-Za-df-hj-z]", m.group(2)):
        return False
    return m.group(1) is None or re.search(r"[1-9]", m.group(1)) is not None


def _letters(s: str) -> bool:
    return re.search(r"[A-Za-z]", _COMMAND.sub(" ", s)) is not None


def frame(answer: str, gold: str, letters_are_variables: bool = True) -> tuple[str, str] | bool:
    """The (answer, gold) pair to hand math-verify, or the verdict when it is decided here; single
    letters count as variables unless `letters_are_variables` is off (string answers)."""
    if pathological(answer) or pathological(gold):
        return False
    if answer.replace(" ", "") == gold.replace(" ", ""):
        # the same up to spaces: juxtaposed letters are products ("a b c" is abc), digits are not ("2 3")
        return True if not _SPACED_DIGITS.search(answer + " " + gold) else (answer, gold)
    if letters_are_variables and any(not _thousands(m.group()) for m in _DIGIT_GROUPS.finditer(answer)):
        return False  # "2 3": two numbers side by side are no number
    if letters_are_variables and not _letters(gold) and _monomial_in_variables(answer):
        return False  # "2a b", "5 x": a product with variables is no number
    if ("'" in answer) != ("'" in gold):
        return False  # x' (a derivative, another symbol) is not x
    if letters_are_variables:
        answer, gold = _products(answer), _products(gold)
        if _letters(answer) or _letters(gold):  # 0.1x+0.2x is 0.3x: exact decimals where there are variables
            answer, gold = _exact_decimals(answer), _exact_decimals(gold)
    return answer, gold


def _products(s: str) -> str:
    """Juxtaposition written out: "(2)(3)", "2(3)", "\\pi(2)" and "a+b c" as products, "\\ln 2 \\cdot 3"
    as (ln 2)*3; not a letter before "(" (a function call?), nor in lists and intervals."""
    s = _LN_NUMBER.sub(lambda m: "\\ln(" + m.group(1) + ")", s)
    if not re.search(r"[,\[\]]", s):
        s = _PRODUCT.sub(lambda _: "\\cdot ", s)
    unit = _FINAL_UNIT.search(s)
    keep = unit.start(1) if unit and unit.group(1) in _UNIT_LETTERS and not _letters(s[:unit.start(1)]) else -1

    def product(m: re.Match) -> str:
        run = m.start()
        while run > 0 and s[run - 1].isascii() and s[run - 1].isalpha():
            run -= 1
        after_command = run > 0 and s[run - 1] == "\\" and run < m.start()
        return m.group() if m.end() == keep or after_command else "\\cdot "

    return _JUXTAPOSED.sub(product, s)


def _exact_decimals(s: str) -> str:
    return _DECIMAL.sub(lambda m: "\\frac{" + (m.group(1) + m.group(2)).lstrip("0") + "0" * (
        (m.group(1) + m.group(2)).lstrip("0") == "") + "}{1" + "0" * len(m.group(2)) + "}", s)


TINY = 1e-6  # math-verify's numeric fallback rounds to 6 places: below this any two values look equal


def tiny_values_differ(gold, answer) -> bool:
    """Whether math-verify's parses of a gold and an answer are two different numbers below TINY, which
    its 6-place numeric comparison equates (sqrt(2)/10^17 "equals" sqrt(3)/10^17): compared at 30
    significant digits, they must agree to a relative 1e-6. Non-numbers and larger values: False."""
    import sympy

    def value(parsed):
        expr = next((e for e in parsed if isinstance(e, sympy.Expr)), None)
        if expr is None or not expr.is_number or expr.free_symbols:
            return None
        number = sympy.N(expr, 30)
        return number if number.is_real else None

    a, b = value(gold), value(answer)
    if a is None or b is None:
        return False
    big = max(abs(a), abs(b))
    return bool(0 < big < TINY and abs(a - b) > TINY * big)
