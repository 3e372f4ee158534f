"""Monitors: small pure functions from one iteration's records (and recent history) to named signals
that the policy's rules watch. Each returns a float (NaN where there is nothing to measure)."""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections.abc import Sequence

import torch

NAN = float("nan")


def valid_task_rate(metrics: dict) -> float:
    """Share of challenger attempts that parsed into a valid, grounded task (collapse: falls to 0)."""
    return float(metrics.get("valid_task_rate", NAN))


def reasoner_accuracy(metrics: dict) -> float:
    """Reasoner accuracy on the challenger's tasks: near 1 the tasks are too easy, near 0 unanswerable;
    NaN (no reading) in an iteration without a task."""
    value = metrics.get("reasoner_accuracy")
    return NAN if value is None else float(value)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w.]+", " ", text).split())


def _written_in(phrase: str, text: str) -> bool:
    phrase = _fold(phrase)
    return bool(phrase) and re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def answer_leaks(question: str, answer: str, options: Sequence[str] = (), kind: str = "") -> bool:
    """Whether the gold answer is written in the question: the free-form answer (case and punctuation
    folded, as a whole word), or for an MCQ the gold option's text while no other option's is (a
    question that names its options, "3 or 5?", gives nothing away)."""
    text = _fold(question)
    if kind == "mcq" and options:
        index = "ABCD".find(answer.strip().upper()[:1])
        if index < 0 or index >= len(options):
            return False
        others = [o for i, o in enumerate(options) if i != index]
        return _written_in(options[index], text) and not any(_written_in(o, text) for o in others)
    return _written_in(answer, text)


def answer_leak_rate(task_rows: Sequence[dict]) -> float:
    """Share of valid tasks whose gold answer leaks into the question (a free reward for the reasoner)."""
    valid = [r for r in task_rows if r.get("status") == "valid"]
    if not valid:
        return NAN
    leaks = sum(answer_leaks(r["question"], r["answer"], r.get("options") or (), r.get("kind", ""))
                for r in valid)
    return leaks / len(valid)


def _minhash(text: str, num_perm: int):
    from datasketch import MinHash

    words = _fold(text).split()
    shingles = {" ".join(words[i:i + 3]) for i in range(max(1, len(words) - 2))} or {""}
    minhash = MinHash(num_perm=num_perm)
    minhash.update_batch([s.encode() for s in shingles])
    return minhash


def duplicate_rate(questions: Sequence[str], recent: Sequence[str] = (), threshold: float = 0.8,
                   num_perm: int = 128) -> float:
    """Share of this iteration's questions that are near-duplicates (MinHash LSH, estimated Jaccard of
    word 3-shingles >= `threshold`) of another question of this iteration or of the `recent` ones."""
    if not questions:
        return NAN
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    for index, text in enumerate(recent):
        lsh.insert(f"r{index}", _minhash(text, num_perm))
    duplicates = 0
    for index, text in enumerate(questions):
        minhash = _minhash(text, num_perm)
        if lsh.query(minhash):
            duplicates += 1
        lsh.insert(f"q{index}", minhash)
    return duplicates / len(questions)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def ratio_to_mean(value: float, history: Sequence[float]) -> float:
    """`value` over the mean of `history` (length explosion: completions suddenly much longer)."""
    past = _finite(history)
    if not past or not math.isfinite(value) or statistics.fmean(past) <= 0:
        return NAN
    return value / statistics.fmean(past)


def zscore(value: float, history: Sequence[float], min_std: float = 0.0) -> float:
    """How many standard deviations (at least `min_std`) `value` lies from the mean of `history`
    (reward and gradient-norm spikes); NaN with fewer than two past values."""
    past = _finite(history)
    if len(past) < 2 or not math.isfinite(value):
        return NAN
    std = max(statistics.pstdev(past), min_std)
    if std == 0:
        return 0.0 if value == statistics.fmean(past) else math.inf
    return (value - statistics.fmean(past)) / std


def policy_kl(reference: torch.Tensor, current: torch.Tensor, mask: torch.Tensor) -> float:
    """KL(initial || current) per probe sequence: mean over sequences of the summed k3 estimate
    exp(r) - 1 - r, r = current - reference logprob, on tokens sampled from the initial model."""
    ratio = (current - reference) * mask
    k3 = (torch.exp(ratio) - 1 - ratio) * mask
    sequences = (mask.sum(1) > 0).sum()
    return float(k3.sum() / sequences) if int(sequences) else NAN


def eval_regression(metrics: dict, history: Sequence[dict]) -> float:
    """The largest drop of any `eval/*` score below its best earlier value (0 when none dropped, NaN
    when this iteration has no evaluation)."""
    drops = []
    for key, value in metrics.items():
        if not key.startswith("eval/") or not isinstance(value, (int, float)):
            continue
        best = _finite([row[key] for row in history if isinstance(row.get(key), (int, float))])
        drops.append(max(0.0, max(best) - value) if best else 0.0)
    return max(drops) if drops else NAN


def disagreement(agrees: Sequence[bool]) -> float:
    """Share of tasks where the independent evaluator, reading the document, disagrees with the gold
    answer (wrong gold answers: the hallucination the challenger would otherwise amplify)."""
    return (1 - sum(agrees) / len(agrees)) if agrees else NAN
