"""Answer verification: is a reasoner response's final answer equivalent to the gold answer?

Layers, mirroring csrc/verify_*: extraction (`extract`), normalisation (`normalize`), the string rule
(`string_rule`), the math-verify worker pool (`pool`), and above them the rules that follow the
mathematics where a checker would not: several boxed values and alternatives (`compound`), look-alike
characters (`fold`), and what never reaches math-verify (`frame`). The compiled fast path
(`spice._C.verify_batch`) decides what it can with certainty; only undecided items go to math-verify,
under a hard per-item timeout, so no input can hang or crash the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from spice.verify.chars import as_text
from spice.verify.compound import plan
from spice.verify.extract import MAX_PHRASE_BYTES, MAX_SCAN_CHARS, extract_answer, last_boxed, parse_letter
from spice.verify.frame import frame
from spice.verify.normalize import clean_for_math_verify, normalize_answer, string_canonical
from spice.verify.pool import (
    DEFAULT_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
    MathVerifyPool,
    configure,
    get_pool,
    shutdown,
)
from spice.verify.string_rule import MAX_ANSWER_BYTES, string_rule

try:
    from spice import _C
except ImportError:  # a source checkout without the compiled module: everything goes to math-verify
    _C = None

KINDS = ("mcq", "integer", "float", "expression", "string")
EQUIVALENT, NOT_EQUIVALENT, UNDECIDED = 1, 0, -1

__all__ = ["DEFAULT_TIMEOUT_S", "EQUIVALENT", "KINDS", "MAX_ANSWER_BYTES", "MAX_PHRASE_BYTES", "MAX_SCAN_CHARS",
           "NOT_EQUIVALENT", "STARTUP_TIMEOUT_S", "UNDECIDED", "MathVerifyPool", "configure", "extract_answer",
           "fast_verdicts", "get_pool", "last_boxed", "normalize_answer", "parse_letter", "slow_verdicts", "shutdown",
           "string_canonical", "string_rule", "verify",
           "verify_batch"]


def _check_kind(kind: str, index: int) -> str:
    if kind not in KINDS:
        raise ValueError(f"verify: item {index}: kind {kind!r} is not one of {KINDS}")
    return kind


def fast_verdicts(items: Sequence[tuple[str, str, str]]) -> list[int]:
    """Verdicts of the compiled fast path alone: 1 equivalent, 0 not equivalent, -1 undecided."""
    if _C is None:
        return [UNDECIDED] * len(items)
    responses = [as_text(r)[-MAX_SCAN_CHARS:] for r, _, _ in items]
    golds = [as_text(g) for _, g, _ in items]
    kinds = [_check_kind(k, i) for i, (_, _, k) in enumerate(items)]
    return list(_C.verify_batch(responses, golds, kinds))


def slow_verdicts(items: Sequence[tuple[str, str, str]], timeout: float | None = None,
                  framed: bool = True) -> list[bool]:
    """Verdicts without the fast path: extraction here, MCQ letters and the short-string rule in Python,
    everything else through math-verify in the worker pool; `framed` refuses or rewrites first what
    math-verify reads against the mathematics (`frame`); False gives math-verify's own verdicts."""
    verdicts: list[bool | None] = [None] * len(items)
    jobs: dict[tuple[str, str], list[int]] = {}
    for i, (response, gold, kind) in enumerate(items):
        kind = _check_kind(kind, i)
        gold = as_text(gold)
        answer = extract_answer(response, kind)
        if kind == "mcq":
            letter = parse_letter(gold)
            verdicts[i] = answer is not None and letter is not None and answer == letter
            continue
        if answer is None:
            verdicts[i] = False
            continue
        rule = string_rule(answer, gold) if kind == "string" else None
        if rule is not None:
            verdicts[i] = rule
            continue
        pair = (clean_for_math_verify(answer), clean_for_math_verify(gold))
        framed_pair = frame(*pair, letters_are_variables=kind != "string") if framed else pair
        if isinstance(framed_pair, bool):
            verdicts[i] = framed_pair
        else:
            jobs.setdefault(framed_pair, []).append(i)
    if jobs:
        pairs = list(jobs)
        for pair, result in zip(pairs, get_pool().run(pairs, timeout)):
            for i in jobs[pair]:
                verdicts[i] = bool(result)
    return [bool(v) for v in verdicts]


def _engine_verdicts(items: list[tuple[str, str, str]], timeout: float | None) -> list[bool]:
    fast = fast_verdicts(items)
    undecided = [i for i, v in enumerate(fast) if v == UNDECIDED]
    out = [v == EQUIVALENT for v in fast]
    if undecided:
        for i, v in zip(undecided, slow_verdicts([items[i] for i in undecided], timeout)):
            out[i] = v
    return out


def verify_batch(items: Iterable[tuple[str, str, str]], timeout: float | None = None,
                 questions: Sequence[str | None] | None = None) -> list[bool]:
    """Whether each (response, gold, kind) is correct: several-part answers and look-alikes settled
    first, then the compiled fast path, then math-verify (hard per-item timeout, in worker processes)
    for what it leaves undecided. `questions` (one per item) refuses answers that restate the question.
    Never raises on any strings."""
    items = list(items)
    plans = [plan(r, g, _check_kind(k, i), questions[i] if questions is not None else None)
             for i, (r, g, k) in enumerate(items)]
    flat = [item for p in plans for item in p.items]
    results = _engine_verdicts(flat, timeout) if flat else []
    out, start = [], 0
    for p in plans:
        if p.verdict is not None:
            out.append(p.verdict)
            continue
        out.append(bool(p.combine(results[start:start + len(p.items)])))
        start += len(p.items)
    return out


def verify(response: str, gold: str, kind: str) -> bool:
    """Whether the final answer of `response` is equivalent to `gold` for an answer of type `kind`
    (one of KINDS)."""
    return verify_batch([(response, gold, kind)])[0]
