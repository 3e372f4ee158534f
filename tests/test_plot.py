"""`spice plot`: PNG curves from a synthetic metrics.jsonl, robust to missing keys and a truncated line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from spice import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(run_dir: Path, truncated: bool = True) -> None:
    rows = []
    for i in range(6):
        row = {"iteration": i, "valid_task_rate": 0.1 * i, "reasoner_accuracy": 0.5 - 0.05 * i,
               "challenger_reward_mean": 0.2 + 0.1 * i, "challenger_reward_std": 0.1, "loss": 0.01 * i,
               "grad_norm": 1.0 + i, "invalid_reasons": {"no_json": 3}, "correct_histogram": [1, 2, 3]}
        if i % 3 == 2:
            row.update({"eval/gsm8k": 0.05 * i, "eval/math500": 0.02 * i})
        if i == 4:
            del row["loss"]  # a missing key leaves a gap, not an error
        rows.append(json.dumps(row))
    text = "\n".join(rows) + "\n"
    if truncated:
        text += '{"iteration": 6, "valid_task_ra'
    (run_dir / "metrics.jsonl").write_text(text)


def _args(run_dir: Path, out: Path | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    plot.add_arguments(parser)
    return parser.parse_args([str(run_dir)] + (["--out", str(out)] if out else []))


def test_plot_writes_png_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_metrics(tmp_path)
    assert plot.run(_args(tmp_path)) == 0
    printed = capsys.readouterr()
    paths = [Path(line) for line in printed.out.split()]
    names = {p.name for p in paths}
    assert {"rewards.png", "valid_rate.png", "accuracy.png", "benchmarks.png", "loss.png",
            "grad_norm.png"} == names
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
    assert "line 7" in printed.err and "truncated" in printed.err


def test_read_metrics_skips_the_truncated_line(tmp_path: Path) -> None:
    _write_metrics(tmp_path)
    rows, problems = plot.read_metrics(tmp_path / "metrics.jsonl")
    assert [row["iteration"] for row in rows] == list(range(6))
    assert len(problems) == 1


def test_series_skips_missing_and_non_numeric_values() -> None:
    rows = [{"iteration": 0, "loss": 1.0}, {"iteration": 1}, {"iteration": 2, "loss": "n/a"},
            {"iteration": 3, "loss": float("nan")}, {"iteration": 4, "loss": 0.5}]
    assert plot._series(rows, "loss") == ([1, 5], [1.0, 0.5])


def test_only_figures_with_data_are_drawn(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iteration": 0, "reasoner_accuracy": 0.3}) + "\n")
    paths = plot.plot_run(tmp_path, tmp_path / "out")
    assert [p.name for p in paths] == ["accuracy.png"]


def test_missing_or_empty_metrics_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert plot.run(_args(tmp_path)) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0, "lo')
    assert plot.run(_args(tmp_path)) == 1
    assert "no metrics rows" in capsys.readouterr().err
