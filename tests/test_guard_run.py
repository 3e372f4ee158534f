"""Fault-injected runs with the tiny model and the scripted challenger: a reward spike rolls back and the
run continues from the right checkpoint; a duplicated-question flood fires its rule; pause waits for
approval; `spice audit` passes intact, resumed and rolled-back runs and names the file and row of any
change; promotion is gated; the report and TensorBoard files are written."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from spice.cli import main
from tests.test_loop import DOCUMENTS

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-audit-key"


def _corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCUMENTS))
    return path


def _args(run_dir, corpus, model, iterations=3, *extra):
    return ["train", f"run.dir={run_dir}", f"run.iterations={iterations}", "run.documents_per_iteration=2",
            f"model.path={model}", f"corpus.path={corpus}", "challenger.attempts_per_document=2",
            "challenger.select_format=false", "challenger.formats=[mcq]", "challenger.max_new_tokens=10",
            "reasoner.samples=2", "reasoner.max_new_tokens=6", "optim.lr=1e-3", "run.seed=3",
            "guard.drift_every=2", "guard.drift_probes=2", "guard.drift_probe_tokens=4", *extra]


def _start(args, **env):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "guard_worker.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(args, **env):
    process = _start(args, **env)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _events(run_dir, kind=None):
    return [e for e in _rows(run_dir / "events.jsonl") if kind is None or e["event"] == kind]


def _audit(run_dir, capsys, key=None, monkeypatch=None):
    if monkeypatch is not None:
        if key:
            monkeypatch.setenv("SPICE_AUDIT_KEY", key)
        else:
            monkeypatch.delenv("SPICE_AUDIT_KEY", raising=False)
    code = main(["audit", str(run_dir)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def signed_run(tiny_model, tmp_path_factory):
    """Three signed iterations with evaluation on a local benchmark and a promotion threshold."""
    tmp_path = tmp_path_factory.mktemp("signed")
    corpus = _corpus(tmp_path)
    bench = tmp_path / "facts.jsonl"
    bench.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i),
                                         "kind": "integer"}) + "\n" for i in range(3)))
    output = _run(_args(tmp_path / "run", corpus, tiny_model, 3, "eval.every=3", f"eval.benchmarks=[{bench}]",
                        "eval.max_new_tokens=4", "guard.promote_min_delta={mean: 0.5}", "guard.evaluator=initial",
                        "guard.evaluator_samples=2", "guard.evaluator_max_new_tokens=4"), SPICE_AUDIT_KEY=KEY)
    return tmp_path / "run", output


def test_signed_run_passes_audit_only_with_its_key(signed_run, capsys, monkeypatch):
    run_dir, output = signed_run
    assert "iter 3/3" in output
    code, text = _audit(run_dir, capsys, KEY, monkeypatch)
    assert code == 0 and "OK" in text and "signatures verified" in text, text
    code, text = _audit(run_dir, capsys, None, monkeypatch)
    assert code == 1 and "set $SPICE_AUDIT_KEY" in text
    code, text = _audit(run_dir, capsys, "wrong", monkeypatch)
    assert code == 1 and "signature does not verify" in text


def test_manifests_version_the_dataset(signed_run):
    run_dir, _ = signed_run
    manifests = _rows(run_dir / "manifests.jsonl")
    assert [m["iteration"] for m in manifests] == [0, 1, 2]
    tasks = _rows(run_dir / "tasks.jsonl")
    assert sum(len(m["tasks"]["sha256"]) for m in manifests) == len(tasks)
    first = manifests[0]
    assert first["config_sha256"] and first["code"]["package"] and first["corpus"]["sha256"]
    assert {d["id"] for m in manifests for d in m["documents"]} == {d["id"] for d in _rows(run_dir / "documents.jsonl")}
    assert manifests[1]["signals"]["policy_kl"] is not None  # drift measured every 2 iterations
    assert "eval/facts" in _rows(run_dir / "metrics.jsonl")[2]
    # the independent evaluator re-answered each iteration's valid tasks (one per document here)
    for manifest in manifests:
        assert len(manifest["evaluator"]) == 2 and {"gold", "answer", "agrees"} <= set(manifest["evaluator"][0])
        agrees = [j["agrees"] for j in manifest["evaluator"]]
        assert manifest["signals"]["evaluator_disagreement"] == 1 - sum(agrees) / len(agrees)


def test_the_evaluator_reads_the_document():
    from spice.guard.evaluator import evaluator_messages, sample_tasks

    row = {"question": "Where was she born?", "kind": "mcq", "options": ["Warsaw", "Paris", "Rome", "Oslo"],
           "answer": "A", "status": "valid", "document_id": "d", "attempt": 0}
    text = evaluator_messages(DOCUMENTS[0], row)[0]["content"]
    assert DOCUMENTS[0] in text and "A. Warsaw" in text and "\\boxed" in text
    rows = [dict(row, attempt=i) for i in range(5)] + [{"status": "invalid"}]
    assert sample_tasks(rows, 3, 0, 1) == sample_tasks(rows, 3, 0, 1) and len(sample_tasks(rows, 9, 0, 1)) == 5


@pytest.mark.parametrize("name", ["tasks.jsonl", "metrics.jsonl", "events.jsonl", "manifests.jsonl",
                                  "documents.jsonl"])
@pytest.mark.parametrize("damage", ["byte", "drop", "drop_last"])
def test_a_changed_byte_or_dropped_row_fails_audit_naming_file_and_row(signed_run, tmp_path, capsys, monkeypatch,
                                                                       name, damage):
    run_dir = tmp_path / "copy"
    shutil.copytree(signed_run[0], run_dir)
    lines = (run_dir / name).read_text(encoding="utf-8").splitlines(keepends=True)
    row = 2 if len(lines) > 2 else len(lines)  # 1-based
    if damage == "byte":
        line = lines[row - 1]  # the first letter of the first key: still valid JSON, another content
        lines[row - 1] = line[:2] + ("X" if line[2] != "X" else "Y") + line[3:]
    elif damage == "drop":
        del lines[row - 1]
    else:
        row = len(lines)
        del lines[-1]
    (run_dir / name).write_text("".join(lines), encoding="utf-8")
    code, text = _audit(run_dir, capsys, KEY, monkeypatch)
    assert code == 1, text
    assert f"{name} row {row}" in text, text


def test_a_changed_checkpoint_file_fails_audit(signed_run, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(signed_run[0], run_dir)
    weights = run_dir / "checkpoints" / "step_000003" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    code, text = _audit(run_dir, capsys, KEY, monkeypatch)
    assert code == 1 and "checkpoints/step_000003/model/model.safetensors" in text, text
    weights.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 1]))
    assert _audit(run_dir, capsys, KEY, monkeypatch)[0] == 0
    (run_dir / "checkpoints" / "step_000003" / "rng.pt").write_bytes(b"a pickle put there later")
    code, text = _audit(run_dir, capsys, KEY, monkeypatch)
    assert code == 1 and "checkpoints/step_000003/rng.pt: not part of the recorded checkpoint" in text, text


def test_a_changed_config_fails_audit(signed_run, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(signed_run[0], run_dir)
    with open(run_dir / "config.yaml", "a") as handle:
        handle.write("# edited\n")
    code, text = _audit(run_dir, capsys, KEY, monkeypatch)
    assert code == 1 and "config.yaml" in text


def test_promotion_needs_an_approval_and_the_thresholds(signed_run, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(signed_run[0], run_dir)
    monkeypatch.setenv("SPICE_AUDIT_KEY", KEY)
    assert main(["promote", str(run_dir), "--step", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no recorded approval of step_000003" in err[0], err
    assert main(["approve", str(run_dir), "--step", "3", "--by", "tester"]) == 0
    assert "approved by tester, signed" in capsys.readouterr().out
    assert main(["promote", str(run_dir), "--step", "3"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "below the promotion thresholds" in err[0] and "mean" in err[0], err
    assert not (run_dir / "releases").exists()
    # an approval names the checkpoint's content: a changed checkpoint is not approved (and fails audit)
    approval = _events(run_dir, "approval")[-1]
    assert approval["by"] == "tester" and approval["checkpoint_sha256"] and "hmac" in approval["chain"]


def test_an_approved_checkpoint_above_threshold_is_exported(signed_run, tmp_path, capsys, monkeypatch):
    from spice.config import load_config
    from spice.guard import promote

    run_dir = tmp_path / "copy"
    shutil.copytree(signed_run[0], run_dir)
    monkeypatch.setenv("SPICE_AUDIT_KEY", KEY)
    assert main(["approve", str(run_dir), "--step", "step_000003", "--by", "tester"]) == 0

    def lenient(path, overrides=()):
        config = load_config(path, overrides)
        config.guard.promote_min_delta = {"mean": -1.0, "facts": -1.0}
        return config

    monkeypatch.setattr(promote, "load_config", lenient)
    assert main(["promote", str(run_dir), "--step", "3", "--to", str(tmp_path / "releases")]) == 0
    release = tmp_path / "releases" / "copy-step_000003"
    assert (release / "model.safetensors").is_file() and (release / "tokenizer_config.json").is_file()
    provenance = json.loads((release / "provenance.json").read_text())
    assert provenance["approval"]["by"] == "tester" and "mean" in provenance["base_scores"]
    assert _events(run_dir, "promoted")[-1]["to"] == str(release)
    assert _audit(run_dir, capsys, KEY, monkeypatch)[0] == 0


class _Checker(HTMLParser):
    VOID = {"meta", "br", "hr", "img", "input", "link", "rect", "circle", "polyline", "line", "path"}

    def __init__(self):
        super().__init__()
        self.stack, self.tags, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_one_self_contained_page(signed_run, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(signed_run[0], run_dir)
    monkeypatch.setenv("SPICE_AUDIT_KEY", KEY)
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.stack
    text = " ".join(checker.text)
    assert checker.tags.count("svg") >= 4 and "polyline" in checker.tags
    assert "Audit: OK" in text and "Guard events" in text and "Provenance" in text
    assert "Which word opens the sentence" in text and any(d[:40] in text for d in DOCUMENTS)  # task, document
    assert "src=" not in page and "href=" not in page  # nothing outside the page


def test_report_renders_in_headless_chromium(signed_run, tmp_path, monkeypatch):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    monkeypatch.setenv("SPICE_AUDIT_KEY", KEY)
    run_dir = tmp_path / "copy"
    shutil.copytree(signed_run[0], run_dir)
    assert main(["report", str(run_dir)]) == 0
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (run_dir / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert "Guard events" in dom.stdout and "<svg" in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", (run_dir / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_tensorboard_event_files_hold_the_metrics(signed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(signed_run[0] / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert "challenger_reward_mean" in tags and "duplicate_rate" in tags
    assert [e.step for e in accumulator.Scalars("valid_task_rate")] == [1, 2, 3]


def test_reward_spike_rolls_back_and_the_run_continues_from_the_right_checkpoint(tiny_model, tmp_path, capsys,
                                                                                 monkeypatch):
    corpus = _corpus(tmp_path)
    run_dir = tmp_path / "run"
    rule = "{name: spike, monitor: challenger_reward_mean, zscore: 5, min_std: 0.1, min_history: 2, action: rollback}"
    output = _run(_args(run_dir, corpus, tiny_model, 5, f"guard.rules=[{rule}]"),
                  SPICE_TEST_SPIKE_AT="3", SPICE_TEST_SPIKE_MARKER=str(tmp_path / "spiked"))
    assert "rule 'spike' fired" in output and "rolled back to step_000003" in output
    (rollback,) = _events(run_dir, "rollback")
    assert rollback["to"] == "step_000003" and rollback["next_iteration"] == 3
    assert rollback["superseded"] == {"tasks.jsonl": [12, 16], "metrics.jsonl": [3, 4], "manifests.jsonl": [3, 4]}
    metrics = _rows(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1, 2, 3, 3, 4]  # nothing lost: the spiked row stays
    assert metrics[3]["challenger_reward_mean"] > 40 > metrics[4]["challenger_reward_mean"]
    tasks = _rows(run_dir / "tasks.jsonl")
    # the redone iteration samples from step_000003's weights under a new version and a new seed
    assert {t["weight_version"] for t in tasks[12:16]} == {3} and {t["weight_version"] for t in tasks[16:20]} == {5}
    manifests = _rows(run_dir / "manifests.jsonl")
    assert manifests[4]["iteration"] == 3 and manifests[4]["seed"] != manifests[3]["seed"]
    assert manifests[4]["weight_version"] == 5
    loop_state = json.loads((run_dir / "checkpoints" / "step_000005" / "loop_state.json").read_text())
    assert loop_state["next_iteration"] == 5 and loop_state["guard_rollbacks"] == 1 and loop_state["guard_clean"]
    assert [f["iteration"] for f in _events(run_dir, "firing") if f["rule"] == "spike"] == [3]
    code, text = _audit(run_dir, capsys, None, monkeypatch)
    assert code == 0, text
    # and by hand: back to step_000005's predecessor that still exists, then resume to the end again
    assert main(["rollback", str(run_dir), "--to", "step_000004", "--by", "tester"]) == 0
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000004"
    _run(["train", "--resume", str(run_dir)])
    assert [m["iteration"] for m in _rows(run_dir / "metrics.jsonl")] == [0, 1, 2, 3, 3, 4, 4]
    assert _events(run_dir, "rollback")[-1]["superseded"]["metrics.jsonl"] == [5, 6]
    assert _audit(run_dir, capsys, None, monkeypatch)[0] == 0


def test_duplicated_question_flood_fires_its_rule(tiny_model, tmp_path):
    corpus = _corpus(tmp_path)
    run_dir = tmp_path / "run"
    rule = "{name: flood, monitor: duplicate_rate, above: 0.4, action: stop}"
    output = _run(_args(run_dir, corpus, tiny_model, 4, "run.documents_per_iteration=3", f"guard.rules=[{rule}]"))
    assert "rule 'flood' fired" in output and "stopped after iteration 2" in output
    (firing,) = _events(run_dir, "firing")
    assert firing["rule"] == "flood" and firing["iteration"] == 1 and firing["value"] == 1.0
    assert _events(run_dir, "stop")[0]["iteration"] == 1
    assert len(_rows(run_dir / "metrics.jsonl")) == 2
    state = json.loads((run_dir / "checkpoints" / "step_000002" / "loop_state.json").read_text())
    assert state["guard_clean"] is False  # a stop checkpoint does not pass every rule


def test_pause_waits_for_approval(tiny_model, tmp_path):
    corpus = _corpus(tmp_path)
    run_dir = tmp_path / "run"
    rule = "{name: first, monitor: iteration, below: 0.5, action: pause}"
    process = _start(_args(run_dir, corpus, tiny_model, 2, f"guard.rules=[{rule}]", "guard.pause_poll_seconds=0.1"))
    deadline = time.time() + 600
    while time.time() < deadline and not ((run_dir / "events.jsonl").exists()
                                          and any(e["event"] == "pause" for e in _events(run_dir))):
        time.sleep(0.1)
    time.sleep(2.0)
    assert process.poll() is None  # still waiting
    assert len(_rows(run_dir / "metrics.jsonl")) == 1
    assert not (run_dir / "checkpoints" / "step_000001").exists()
    assert main(["approve", str(run_dir), "--by", "tester"]) == 0
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert "approved by tester" in output and "iter 2/2" in output
    approval = _events(run_dir, "approval")[0]
    assert approval["by"] == "tester" and approval["iteration"] == 0


def test_killed_and_resumed_run_passes_audit(tiny_model, tmp_path, capsys, monkeypatch):
    corpus = _corpus(tmp_path)
    run_dir = tmp_path / "run"
    process = _start(_args(run_dir, corpus, tiny_model, 3))
    pointer = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 600
    while time.time() < deadline and not (pointer.exists() and pointer.read_text().strip() == "step_000001"):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    with open(run_dir / "tasks.jsonl", "a") as handle:
        handle.write('{"iteration": 1, "document_id": "half a ro')
    _run(["train", "--resume", str(run_dir)])
    code, text = _audit(run_dir, capsys, None, monkeypatch)
    assert code == 0, text
    assert [m["iteration"] for m in _rows(run_dir / "metrics.jsonl")] == [0, 1, 2]
    assert [m["iteration"] for m in _rows(run_dir / "manifests.jsonl")] == [0, 1, 2]
    assert _events(run_dir, "resume")


@pytest.mark.distributed
def test_rollback_and_drift_under_torchrun(tiny_model, tmp_path, capsys, monkeypatch):
    """Two gloo ranks: every rank scores the drift probe, follows rank 0's rollback and ends in step."""
    corpus = _corpus(tmp_path)
    run_dir = tmp_path / "run"
    rule = "{name: spike, monitor: challenger_reward_mean, zscore: 5, min_std: 0.1, min_history: 1, action: rollback}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SPICE_TEST_SPIKE_AT": "2",
           "SPICE_TEST_SPIKE_MARKER": str(tmp_path / "spiked")}
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              str(ROOT / "tests" / "guard_worker.py"),
                              *_args(run_dir, corpus, tiny_model, 3, f"guard.rules=[{rule}]")],
                             env=env, cwd=ROOT, timeout=900, capture_output=True, text=True)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-6000:]
    assert [e["to"] for e in _events(run_dir, "rollback")] == ["step_000002"]
    assert [m["iteration"] for m in _rows(run_dir / "metrics.jsonl")] == [0, 1, 2, 2]
    assert _rows(run_dir / "manifests.jsonl")[1]["signals"]["policy_kl"] is not None
    assert json.loads((run_dir / "checkpoints" / "step_000003" / "loop_state.json").read_text())["guard_rollbacks"] == 1
    assert _audit(run_dir, capsys, None, monkeypatch)[0] == 0
