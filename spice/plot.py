"""`spice plot RUN_DIR`: training curves from RUN_DIR/metrics.jsonl (rewards, valid-task rate,
reasoner accuracy, benchmark scores, loss) drawn to PNG files in RUN_DIR/plots/."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

# (file stem, title, y label, which metric keys belong to the figure)
FIGURES: list[tuple[str, str, str, Callable[[str], bool]]] = [
    ("rewards", "Rewards", "mean reward",
     lambda k: "reward" in k and not k.endswith("_std")),
    ("valid_rate", "Challenger: valid tasks", "fraction",
     lambda k: k in ("valid_task_rate", "documents_with_task")),
    ("accuracy", "Reasoner accuracy on challenger tasks", "accuracy",
     lambda k: k == "reasoner_accuracy" or k.endswith("/accuracy")),
    ("benchmarks", "Benchmark scores", "score",
     lambda k: k.startswith("eval/")),
    ("loss", "Policy loss", "loss",
     lambda k: k == "loss" or (k.startswith("loss/") and not k.endswith("_std"))),
    ("grad_norm", "Gradient norm", "norm",
     lambda k: k == "grad_norm"),
    ("lengths", "Completion lengths", "tokens",
     lambda k: k.endswith("_length_mean")),
]


def read_metrics(path: Path) -> tuple[list[dict], list[str]]:
    """The JSON objects of metrics.jsonl and a note for every line that is not one (a run killed
    mid-write leaves a truncated last line)."""
    rows, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                problems.append(f"{path} line {number}: not valid JSON (truncated?), skipped")
                continue
            if not isinstance(row, dict):
                problems.append(f"{path} line {number}: not a JSON object, skipped")
                continue
            rows.append(row)
    return rows, problems


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for position, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        x = row.get("iteration", position)
        xs.append(x + 1 if isinstance(x, int) else position + 1)  # iterations counted from 1
        ys.append(float(value))
    return xs, ys


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw every figure of FIGURES that has data; return the PNG paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows, _ = read_metrics(run_dir / "metrics.jsonl")
    from spice.guard.records import is_superseded, superseded

    ranges = superseded(run_dir)  # rows a rollback replaced stay in the file but not in the curves
    rows = [r for r in rows if not (isinstance(r.get("chain"), dict)
                                    and is_superseded(ranges, "metrics.jsonl", r["chain"].get("n", -1)))]
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    keys = sorted({k for row in rows for k in row})
    written = []
    for stem, title, ylabel, selects in FIGURES:
        series = {k: _series(rows, k) for k in keys if selects(k)}
        series = {k: v for k, v in series.items() if v[0]}
        if not series:
            continue
        figure, axes = plt.subplots(figsize=(8, 4.5))
        for key, (xs, ys) in series.items():
            axes.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        axes.set_title(f"{title} — {run_dir.name}")
        axes.set_xlabel("iteration")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{stem}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice plot`."""
    parser.add_argument("run_dir", help="a run folder holding metrics.jsonl")
    parser.add_argument("--out", help="folder for the PNG files (default: RUN_DIR/plots)")


def run(args: argparse.Namespace) -> int:
    """Draw the curves and print the path of each PNG file."""
    metrics = Path(args.run_dir) / "metrics.jsonl"
    if not metrics.is_file():
        print(f"spice plot: {metrics} does not exist (is {args.run_dir} a run folder?)", file=sys.stderr)
        return 2
    rows, problems = read_metrics(metrics)
    for problem in problems:
        print(f"spice plot: {problem}", file=sys.stderr)
    if not rows:
        print(f"spice plot: {metrics} has no metrics rows yet", file=sys.stderr)
        return 1
    paths = plot_run(args.run_dir, args.out)
    if not paths:
        print(f"spice plot: {metrics} has none of the plotted metrics", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0
