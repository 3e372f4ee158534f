"""MegatronBackend under torchrun on CPU (gloo, two processes): TP=2, PP=2 and DP=2 (with full activation
recomputation) against a plain transformers forward/backward with the reference GRPO loss, on tiny
Llama and Qwen3 models; the HF weight round trip, HF export and checkpoints; and one full
`spice train` iteration with TP=2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("megatron.core")

from spice.testing import tiny_model_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ["tp2_pp1_dp1", "tp1_pp2_dp1", "tp1_pp1_dp2_recompute"]
pytestmark = pytest.mark.distributed


def _torchrun(args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              *map(str, args)], env=env, cwd=ROOT, timeout=timeout, capture_output=True, text=True)
    assert process.returncode == 0, process.stdout[-4000:] + process.stderr[-8000:]
    return process


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("megatron")
    models = [tiny_model_dir(tmp / "llama"), tiny_model_dir(tmp / "qwen3", qk_norm=True)]
    _torchrun([ROOT / "tests" / "megatron_worker.py", "--out", tmp / "out", "--models", *models])
    rows = json.loads((tmp / "out" / "results.json").read_text())
    return {(row["model"], row["layout"]): row for row in rows}


CASES = [(model, layout) for model in ("llama", "qwen3") for layout in LAYOUTS]


@pytest.mark.parametrize("model,layout", CASES)
def test_matches_transformers_forward_and_backward(results, model, layout):
    row = results[(model, layout)]
    assert row["logprob_error"] < 1e-5, row
    assert row["loss_error"] < 1e-4, row
    assert row["grad_names_match"], row
    assert row["grad_error"] < 1e-4, row  # max |difference| relative to the tensor's max |gradient|
    assert abs(row["grad_norm"] - row["ref_grad_norm"]) <= 1e-4 * row["ref_grad_norm"], row


@pytest.mark.parametrize("model,layout", CASES)
def test_hf_weight_round_trip_is_bit_exact(results, model, layout):
    assert results[(model, layout)]["roundtrip_exact"]


@pytest.mark.parametrize("model,layout", [(m, layout) for m in ("llama", "qwen3") for layout in LAYOUTS[:2]])
def test_step_export_and_checkpoint(results, model, layout):
    row = results[(model, layout)]
    assert row["weights_changed"], row
    assert row["save_hf_exact"], row  # save_hf writes exactly what named_weights yields
    assert row["checkpoint_exact"], row
    assert row["logprobs_after_restore"] == 0.0, row


def test_one_spice_iteration_with_tensor_parallelism(tmp_path):
    """`spice train` (scripted challenger, as in test_run.py) for one iteration with TP=2."""
    from tests.test_loop import DOCUMENTS

    model = tiny_model_dir(tmp_path / "llama")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCUMENTS))
    run_dir = tmp_path / "run"
    _torchrun([ROOT / "tests" / "run_worker.py", "train", f"run.dir={run_dir}", "run.iterations=1",
               "run.documents_per_iteration=2", f"model.path={model}", f"corpus.path={corpus}",
               "challenger.attempts_per_document=2", "challenger.select_format=false", "challenger.formats=[mcq]",
               "challenger.max_new_tokens=10", "reasoner.samples=2", "reasoner.max_new_tokens=6", "optim.lr=1e-3",
               "train.backend=megatron", "train.megatron.bf16=false", "train.megatron.tensor_model_parallel_size=2"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    flat = json.dumps(rows[0])
    assert "loss" in flat and "grad_norm" in flat
    checkpoint = run_dir / "checkpoints" / "step_000001"
    assert (checkpoint / "model" / "model.safetensors.index.json").is_file()
    assert (checkpoint / "optimizer_tp0_pp0.pt").is_file() and (checkpoint / "optimizer_tp1_pp0.pt").is_file()
