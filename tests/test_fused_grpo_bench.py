"""`spice bench loss` on the CPU: the reference is measured, the GPU-only paths say why they are skipped."""

from __future__ import annotations

import json

import pytest
import torch

from spice.bench import loss as bench


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU report")
def test_cpu_bench_reports_reference_and_skips_gpu_paths(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--cpu-tokens", "8", "--cpu-hidden", "16", "--cpu-vocab", "64", "--warmup", "0",
            "--repeats", "1", "--json", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    for field in ("device:", "versions:", "command:", "date:", "need a CUDA GPU"):
        assert field in printed
    report = json.loads(out.read_text())
    rows = {row["implementation"]: row for row in report["results"]}
    assert rows["reference"]["status"] == "ok" and rows["reference"]["seconds"] > 0
    assert rows["reference"]["grad_weight_norm"] > 0 and "loss" in rows["reference"]
    assert (rows["reference"]["N"], rows["reference"]["H"], rows["reference"]["V"]) == (8, 16, 64)
    for name in ("fused", "liger-grpo", "liger-flce", "cce"):
        assert rows[name]["status"].startswith("skipped") and "seconds" not in rows[name], rows[name]
    assert "torch" in report["versions"] and "no GPU" in report["device"]
