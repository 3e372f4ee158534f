"""`spice train` as a process: run files, resume after SIGKILL without lost or duplicated rows and
with the metrics of an uninterrupted run, graceful stop."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_loop import DOCUMENTS

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("time", "seconds/", "_per_second", "weight_sync/seconds", "chain")  # chain: hashes cover times


def _corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCUMENTS))
    return path


def _args(run_dir, corpus, model, iterations=3):
    return ["train", f"run.dir={run_dir}", f"run.iterations={iterations}", "run.documents_per_iteration=2",
            f"model.path={model}", f"corpus.path={corpus}", "challenger.attempts_per_document=2",
            "challenger.select_format=false", "challenger.formats=[mcq]", "challenger.max_new_tokens=10",
            "reasoner.samples=2", "reasoner.max_new_tokens=6", "optim.lr=1e-3", "run.seed=3"]


def _start(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "run_worker.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(args):
    process = _start(args)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _stable(row):
    return {k: v for k, v in row.items() if not any(mark in k for mark in VOLATILE)}


@pytest.fixture(scope="module")
def reference_run(tiny_model, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("reference")
    corpus = _corpus(tmp_path)
    output = _run(_args(tmp_path / "run", corpus, tiny_model))
    return tmp_path / "run", corpus, output


def test_run_folder_holds_every_file(reference_run):
    run_dir, _, output = reference_run
    assert "iter 3/3" in output
    assert (run_dir / "config.yaml").is_file()
    metrics = _rows(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    for key in ("valid_task_rate", "invalid_reasons", "reasoner_accuracy", "challenger_reward_mean",
                "challenger_reward_std", "correct_histogram", "challenger_length_mean", "reasoner_length_mean",
                "loss", "grad_norm", "rollout_tokens_per_second", "train_tokens_per_second",
                "seconds/challenger", "seconds/reasoner", "seconds/train", "weight_sync/seconds",
                "constrained_decoding"):
        assert key in metrics[0], key
    tasks = _rows(run_dir / "tasks.jsonl")
    assert len(tasks) == 3 * 2 * 2
    assert {t["weight_version"] for t in tasks} == {0, 1, 2}
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest == "step_000003"
    assert (run_dir / "checkpoints" / latest / "model" / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / latest / "optimizer.pt").is_file()


def test_resume_after_sigkill_loses_and_duplicates_nothing(reference_run, tiny_model, tmp_path):
    reference_dir, corpus, _ = reference_run
    run_dir = tmp_path / "run"
    args = _args(run_dir, corpus, tiny_model)
    process = _start(args)
    pointer = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 600
    while time.time() < deadline and not (pointer.exists() and pointer.read_text().strip() == "step_000001"):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # somewhere inside iteration 2
    process.communicate()
    # as if a kill landed after rows were appended but before their checkpoint: a partial row too
    with open(run_dir / "tasks.jsonl", "a") as handle:
        handle.write('{"iteration": 1, "document_id": "half a ro')
    output = _run(["train", "--resume", str(run_dir)])
    assert "resumed" in output
    got, want = _rows(run_dir / "tasks.jsonl"), _rows(reference_dir / "tasks.jsonl")
    assert [(t["iteration"], t["attempt"]) for t in got] == [(t["iteration"], t["attempt"]) for t in want]
    assert [_stable(t) for t in got] == [_stable(t) for t in want]
    assert [_stable(m) for m in _rows(run_dir / "metrics.jsonl")] == \
        [_stable(m) for m in _rows(reference_dir / "metrics.jsonl")]


def _wait_for_rows(path, count, process):
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} rows")


def test_stop_file_finishes_the_step_checkpoints_and_is_removed_on_resume(tiny_model, tmp_path):
    corpus = _corpus(tmp_path)
    run_dir = tmp_path / "run"
    process = _start(_args(run_dir, corpus, tiny_model, iterations=50))
    _wait_for_rows(run_dir / "metrics.jsonl", 1, process)
    (run_dir / "STOP").write_text("")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    done = len(_rows(run_dir / "metrics.jsonl"))
    assert f"stopped after iteration {done}" in output and done < 50
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{done:06d}"
    # the STOP file asked the earlier process to stop; the resumed run removes it and runs to the end
    output = _run(["train", "--resume", str(run_dir), f"run.iterations={done + 2}"])
    assert "removed" in output and "STOP" in output and not (run_dir / "STOP").exists()
    assert [m["iteration"] for m in _rows(run_dir / "metrics.jsonl")] == list(range(done + 2))


def test_a_stop_file_left_in_a_fresh_run_folder_is_removed(tiny_model, tmp_path):
    corpus = _corpus(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "STOP").write_text("")
    output = _run(_args(run_dir, corpus, tiny_model, iterations=2))
    assert "stopped" not in output and not (run_dir / "STOP").exists()
    assert len(_rows(run_dir / "metrics.jsonl")) == 2


def test_restart_after_a_crash_before_the_first_checkpoint_duplicates_nothing(tiny_model, tmp_path):
    corpus = _corpus(tmp_path)
    run_dir = tmp_path / "run"
    process = _start([*_args(run_dir, corpus, tiny_model, iterations=50), "run.checkpoint_every=1000"])
    _wait_for_rows(run_dir / "metrics.jsonl", 1, process)
    process.send_signal(signal.SIGKILL)  # rows of iteration 0 (or more) are written, no checkpoint exists
    process.communicate()
    assert not (run_dir / "checkpoints" / "latest").exists()
    _run(_args(run_dir, corpus, tiny_model, iterations=2))  # started again in the same folder
    assert [m["iteration"] for m in _rows(run_dir / "metrics.jsonl")] == [0, 1]
    tasks = [(t["iteration"], t["attempt"]) for t in _rows(run_dir / "tasks.jsonl")]
    assert len(tasks) == len(set(tasks)) and {i for i, _ in tasks} == {0, 1}


def test_sigterm_is_a_graceful_stop(tiny_model, tmp_path):
    corpus = _corpus(tmp_path)
    run_dir = tmp_path / "run"
    process = _start(_args(run_dir, corpus, tiny_model, iterations=50))
    deadline = time.time() + 600
    while time.time() < deadline and not (run_dir / "tasks.jsonl").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert "stopped after iteration" in output
    done = len(_rows(run_dir / "metrics.jsonl"))
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{done:06d}"


def test_existing_run_is_not_overwritten(reference_run, tiny_model):
    run_dir, corpus, _ = reference_run
    process = _start(_args(run_dir, corpus, tiny_model))
    output, _ = process.communicate(timeout=600)
    assert process.returncode != 0 and "already holds a run" in output
