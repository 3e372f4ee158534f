"""Early-against-late comparison of a run folder (spice.eval.learning)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from spice.eval import learning


def _run(tmp_path: Path) -> Path:
    metrics, tasks = [], []
    for i in range(6):
        valid = i >= 3  # late iterations write valid tasks, early ones do not
        metrics.append({"iteration": i, "valid_task_rate": 0.5 if valid else 0.1 * (i % 2),
                        "documents_with_task": 1.0 if valid else 0.0, "reasoner_accuracy": 0.5 if valid else 0.0})
        tasks.append({"iteration": i, "kind": "mcq", "status": "invalid"})
        if valid:
            tasks.append({"iteration": i, "kind": "mcq", "status": "valid", "answer": "B", "reasoner": [
                {"answer": "B", "reward": 1.0, "finish_reason": "stop"},
                {"answer": None, "reward": 0.0, "finish_reason": "length"}]})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tasks))
    return tmp_path


def test_compare_gives_the_difference_in_standard_errors() -> None:
    c = learning.compare([0.0, 0.2], [0.4, 0.6])
    assert math.isclose(c["delta"], 0.4) and math.isclose(c["early_se"], 0.1)
    assert math.isclose(c["z"], 0.4 / math.hypot(0.1, 0.1))


def test_reasoner_accuracy_skips_iterations_without_a_task(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (_run(tmp_path) / "metrics.jsonl").read_text().splitlines()]
    c = learning.metric_rows(rows, 3)["reasoner_accuracy"]
    assert c["n"] == (0, 3) and c["late"] == 0.5 and math.isnan(c["early"])


def test_report_pools_attempts_answers_and_letters(tmp_path: Path) -> None:
    text = learning.report(_run(tmp_path), 3)
    assert "| valid attempts | 0.0% ± 0.0 (0/3) | 50.0% ± 20.4 (3/6) |" in text
    assert "| answers naming a letter | - | 50.0% ± 20.4 (3/6) |" in text
    assert "| truncated answers | - | 50.0% ± 20.4 (3/6) |" in text
    assert "| gold answers | 0/0/0/0 | 0/3/0/0 |" in text
    # golds all B, the reasoner says B half the time: letter habits alone would be right half the time
    assert "| right by letter preference alone (expected) | - | 50.0% |" in text


def test_letter_preference_rate_is_the_chance_of_independent_letters() -> None:
    records = [{"iteration": 0, "kind": "mcq", "answer": g, "reasoner": [{"answer": a} for a in said]}
               for g, said in (("A", "AB"), ("A", "AC"), ("B", "DD"))]
    # golds per answer: A 4, B 2; answers: A 2, B 1, C 1, D 2 -> (4 * 2 + 2 * 1) / 36
    assert math.isclose(learning.letter_preference_rate(records, {0}), 10 / 36)
    assert learning.letter_preference_rate(records, {1}) is None


def test_trend_is_the_least_squares_slope_with_its_error() -> None:
    flat = [(i, i % 2 == 0) for i in range(40)]
    rising = [(i, i >= 20) for i in range(40)]
    slope, error = learning.trend(rising)
    assert slope > 0 and slope / error > 5
    assert abs(learning.trend(flat)[0]) < 0.01
    assert learning.trend([(0, True), (0, False), (0, True)]) is None and learning.trend([(0, True)]) is None


def test_guessing_reward_is_the_binomial_mean_of_the_variance_reward() -> None:
    # G = 2, p = 1/4: both wrong 9/16 and both right 1/16 pay exp(-3.125); one right (3/8) pays 1
    assert math.isclose(learning.guessing_reward(2), (10 / 16) * math.exp(-3.125) + 6 / 16)
    assert math.isclose(learning.guessing_reward(4), 0.6112, abs_tol=1e-3)


def test_report_reads_trends_and_the_guessing_reward(tmp_path: Path) -> None:
    run = _run(tmp_path)
    rows = [json.loads(line) for line in (run / "tasks.jsonl").read_text().splitlines()]
    for row in rows:
        if row["status"] == "valid":
            row["challenger_reward"] = 1.0
    (run / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = learning.report(run, 3)
    assert "| valid attempts (n = 9) | +" in text  # valid only in the late iterations
    assert "challenger reward on answered MCQ tasks (n = 3): 1.000 ± 0.000; 0.402 if the reasoner guessed" in text
