"""`spice bench gpu` (examples/gpu_check.sh): its plan, its stop at the first GPU step without CUDA, and
the issue's targets read off the benchmark outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spice.bench import gpu

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_lists_every_step_with_its_limit(capsys, tmp_path):
    (tmp_path / "megatron_core-0.16.1-cp312-none-any.whl").write_bytes(b"")
    assert gpu.main([str(tmp_path / "out"), "--wheels", str(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    for name in ("wheels", "install", "preflight", "gpu-tests", "bench-loss", "bench-scoring", "bench-train"):
        assert f"{name} (" in printed
    assert "--no-build-isolation -e" in printed and "megatron_core-0.16.1" in printed
    assert "tests/test_fused_grpo.py" in printed and "tests/test_scoring.py" in printed
    assert "--tokens 4096 16384" in printed and "--transformer-impl local" in printed
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path without a GPU")
def test_script_stops_at_the_first_gpu_step_with_a_clear_message(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(["bash", str(REPO / "examples" / "gpu_check.sh"), str(out), "--skip-install"],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "step 'preflight' needs a CUDA device: no CUDA device visible to torch" in proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    statuses = {s["name"]: s["status"] for s in report["steps"]}
    assert statuses["preflight"].startswith("stopped: no CUDA device")
    assert all(statuses[s].startswith("skipped") for s in ("gpu-tests", "bench-loss", "bench-scoring", "bench-train"))
    assert "Stopped: no CUDA device" in (out / "gpu_check.md").read_text()


def test_targets_are_judged_from_the_benchmark_outputs():
    def loss(name, seconds, peak):
        return {"implementation": name, "N": 16384, "status": "ok", "seconds": seconds, "peak_bytes": peak}

    results = {
        "loss": {"results": [loss("fused", 0.15, 2.5e9), loss("reference", 2.0, 30e9),
                             loss("liger-grpo", 0.9, 10e9), loss("liger-flce", 0.2, 3e9)]},
        "train": {"mfu": 0.38},
        "scoring": {"results": [{"T": 128, "G": 8, "speedup": 25.0, "bitwise_equal": True}]},
    }
    met = {c["target"].split(" ")[0] + c["target"].split(" ")[1]: c["met"] for c in gpu.targets(results)}
    assert met == {"fusedpeak": True, "fusedtime": True, "trainingstep": False, "scoringkernel": True}
    results["loss"]["results"][3]["seconds"] = 0.16  # fused 0.15 s > 0.9 x 0.16 s
    assert [c["met"] for c in gpu.targets(results)][1] is False
    assert all(c["met"] is None for c in gpu.targets({}))
