"""Did a run learn? Early against late iterations of a run folder, against the run's own noise.

`python -m spice.eval.learning RUN_DIR --window 10` prints markdown tables: per-iteration metric means of
the first and last `window` iterations with standard errors and their difference in standard errors,
pooled rates from tasks.jsonl (valid attempts, right answers, answers naming a letter, truncated answers)
with binomial standard errors, and the letter counts of gold answers and of reasoner answers (a reasoner
that always names one letter, against a challenger that favours it, is an exploit, not skill). Two
readings use every iteration: the linear trend of valid attempts and right answers with its standard
error, and the challenger's mean reward on answered MCQ tasks against what a reasoner that guesses one
option in four would pay it (equal, the variance reward carries no news of task quality).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import Counter
from pathlib import Path

from spice.plot import read_metrics
from spice.rewards import challenger_reward

METRICS = ("valid_task_rate", "documents_with_task", "reasoner_accuracy", "challenger_reward_mean",
           "challenger_length_mean", "reasoner_length_mean", "grad_norm")


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for fewer than two values)."""
    if not values:
        return math.nan, math.nan
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.fmean(values), error


def compare(early: list[float], late: list[float]) -> dict:
    """Both windows' means and errors, the difference and how many standard errors it is."""
    (m1, e1), (m2, e2) = mean_and_error(early), mean_and_error(late)
    spread = math.hypot(e1, e2)
    return {"early": m1, "early_se": e1, "late": m2, "late_se": e2, "delta": m2 - m1,
            "z": (m2 - m1) / spread if spread > 0 else math.nan, "n": (len(early), len(late))}


def metric_rows(rows: list[dict], window: int) -> dict[str, dict]:
    """compare() of each metric over the first and last `window` iterations; reasoner accuracy counts
    only iterations that had a task (null without one; 0.0 in runs written before 2026-12-02)."""
    def values(part: list[dict], key: str) -> list[float]:
        return [float(r[key]) for r in part if r.get(key) is not None
                and (key != "reasoner_accuracy" or r.get("documents_with_task", 0) > 0)]

    early, late = rows[:window], rows[-window:]
    return {key: compare(values(early, key), values(late, key)) for key in METRICS}


def pooled_rates(records: list[dict], iterations: set[int]) -> dict[str, tuple[int, int]]:
    """(hits, trials) of valid attempts, right answers, answers that name a letter, truncated answers."""
    attempts = [r for r in records if r["iteration"] in iterations]
    answers = [a for r in attempts for a in r.get("reasoner", [])]
    return {
        "valid attempts": (sum(r["status"] == "valid" for r in attempts), len(attempts)),
        "right answers": (sum(a["reward"] > 0 for a in answers), len(answers)),
        "answers naming a letter": (sum(a["answer"] in ("A", "B", "C", "D") for a in answers), len(answers)),
        "truncated answers": (sum(a["finish_reason"] == "length" for a in answers), len(answers)),
    }


def letters(records: list[dict], iterations: set[int]) -> tuple[Counter, Counter]:
    """Gold letters of answered MCQ tasks and the letters the reasoner named, in these iterations."""
    answered = [r for r in records if r["iteration"] in iterations and r.get("reasoner") and r["kind"] == "mcq"]
    return (Counter(r["answer"] for r in answered),
            Counter(a["answer"] for r in answered for a in r["reasoner"] if a["answer"] in ("A", "B", "C", "D")))


def letter_preference_rate(records: list[dict], iterations: set[int]) -> float | None:
    """The right-answer rate a reasoner would get by its letter preferences alone: its answers' letters
    drawn independently of the questions, against these tasks' gold letters (both per answer). A real
    rate near it is letter habits, not reading; a challenger whose golds lean to one letter and a
    reasoner that names that letter raise it together."""
    answered = [r for r in records if r["iteration"] in iterations and r.get("reasoner") and r["kind"] == "mcq"]
    answers = [(r["answer"], a["answer"]) for r in answered for a in r["reasoner"]]
    if not answers:
        return None
    gold, said = Counter(g for g, _ in answers), Counter(a for _, a in answers)
    return sum(gold[x] * said[x] for x in "ABCD") / len(answers) ** 2


def trend(points: list[tuple[int, bool]]) -> tuple[float, float] | None:
    """Least-squares slope of 0/1 outcomes on their iteration and its standard error (per iteration);
    None for fewer than three points or a single iteration. The error treats outcomes as independent:
    the answers to one task are not, so for right answers it is somewhat too small."""
    if len(points) < 3:
        return None
    xs, ys = [float(x) for x, _ in points], [float(y) for _, y in points]
    if len(set(xs)) < 2:
        return None
    slope, intercept = statistics.linear_regression(xs, ys)
    mx = statistics.fmean(xs)
    sxx = sum((x - mx) ** 2 for x in xs)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys)) / (len(xs) - 2)
    return slope, math.sqrt(residual / sxx)


def guessing_reward(samples: int, options: int = 4) -> float:
    """The challenger's expected reward on a valid task whose reasoner guesses: each of its `samples`
    answers right with probability 1/options, independently."""
    p = 1 / options
    return sum(math.comb(samples, k) * p ** k * (1 - p) ** (samples - k)
               * challenger_reward([True] * k + [False] * (samples - k)) for k in range(samples + 1))


def _rate(hits: int, trials: int) -> str:
    if not trials:
        return "-"
    p = hits / trials
    return f"{100 * p:.1f}% ± {100 * math.sqrt(p * (1 - p) / trials):.1f} ({hits}/{trials})"


def report(run_dir: str | Path, window: int) -> str:
    """The markdown tables for `run_dir`."""
    run_dir = Path(run_dir)
    rows, _ = read_metrics(run_dir / "metrics.jsonl")
    with open(run_dir / "tasks.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    done = sorted({r["iteration"] for r in rows})
    early, late = set(done[:window]), set(done[-window:])
    lines = [f"{len(rows)} iterations; early = iterations {min(early)}-{max(early)}, "
             f"late = {min(late)}-{max(late)} (0-based)", "",
             "| metric (per-iteration mean ± s.e.) | early | late | late - early | in s.e. |", "|---|---|---|---|---|"]
    for key, c in metric_rows(rows, window).items():
        lines.append(f"| {key} (n = {c['n'][0]}, {c['n'][1]}) | {c['early']:.3f} ± {c['early_se']:.3f} | "
                     f"{c['late']:.3f} ± {c['late_se']:.3f} | {c['delta']:+.3f} | {c['z']:+.1f} |")
    lines += ["", "| pooled rate (± binomial s.e.) | early | late |", "|---|---|---|"]
    first, last = pooled_rates(records, early), pooled_rates(records, late)
    for name in first:
        lines.append(f"| {name} | {_rate(*first[name])} | {_rate(*last[name])} |")
    habit = [letter_preference_rate(records, part) for part in (early, late)]
    lines.append("| right by letter preference alone (expected) | "
                 + " | ".join("-" if h is None else f"{100 * h:.1f}%" for h in habit) + " |")
    lines += ["", "| linear trend over all iterations | per iteration | over the run | in s.e. |", "|---|---|---|---|"]
    trends = {"valid attempts": [(r["iteration"], r["status"] == "valid") for r in records],
              "right answers": [(r["iteration"], a["reward"] > 0) for r in records for a in r.get("reasoner", [])]}
    span = max(done) - min(done)
    for name, points in trends.items():
        fit = trend(points)
        if fit is not None:
            lines.append(f"| {name} (n = {len(points)}) | {100 * fit[0]:+.2f} points ± {100 * fit[1]:.2f} | "
                         f"{100 * fit[0] * span:+.1f} points | {fit[0] / fit[1] if fit[1] else math.nan:+.1f} |")
    paid = [r for r in records if r.get("reasoner") and r["kind"] == "mcq" and "challenger_reward" in r]
    if paid:
        guess = guessing_reward(len(paid[0]["reasoner"]))
        rewards = [r["challenger_reward"] for r in paid]
        mean, error = mean_and_error(rewards)
        lines += ["", f"challenger reward on answered MCQ tasks (n = {len(paid)}): {mean:.3f} ± {error:.3f}; "
                      f"{guess:.3f} if the reasoner guessed one option in four"]
    lines += ["", "| letters (A/B/C/D) | early | late |", "|---|---|---|"]
    (gold_1, said_1), (gold_2, said_2) = letters(records, early), letters(records, late)
    for name, one, two in (("gold answers", gold_1, gold_2), ("reasoner answers", said_1, said_2)):
        lines.append(f"| {name} | {'/'.join(str(one[x]) for x in 'ABCD')} | {'/'.join(str(two[x]) for x in 'ABCD')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder holding metrics.jsonl and tasks.jsonl")
    parser.add_argument("--window", type=int, default=10, help="iterations in each of the early and late windows")
    args = parser.parse_args(argv)
    print(report(args.run_dir, args.window))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
