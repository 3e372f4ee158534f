import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spice.config import load_config
from spice.rollout.hf import HFRolloutEngine
from spice.train.base import TrainBackend
from spice.train.torch_backend import TorchBackend, loss_normalizer
from tests.batches import random_batch

ROOT = Path(__file__).resolve().parents[1]


def _backend(tiny_model, *overrides):
    return TorchBackend(load_config(None, ["optim.lr=1e-2", "loss.normalizer=16", *overrides]), tiny_model)


def test_step_changes_weights_and_reports_metrics(tiny_model):
    backend = _backend(tiny_model)
    assert isinstance(backend, TrainBackend)
    before = {n: t.clone() for n, t in backend.named_weights()}
    metrics = backend.step(random_batch(backend.model.config.vocab_size))
    assert set(metrics) >= {"loss", "grad_norm", "train_tokens", "train_tokens_per_second"}
    assert metrics["grad_norm"] > 0
    changed = [n for n, t in backend.named_weights() if not torch.equal(t, before[n])]
    assert len(changed) == len(before)


def test_micro_batching_gives_the_same_update(tiny_model):
    batch = random_batch(49152, rows=6)
    results = []
    for micro in ("optim.micro_batch_size=1", "optim.micro_batch_size=6"):
        torch.manual_seed(0)
        backend = _backend(tiny_model, micro)
        metrics = backend.step(batch)
        results.append((metrics["loss"], {n: t.clone() for n, t in backend.named_weights()}))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5, abs=1e-7)
    for name, tensor in results[0][1].items():
        torch.testing.assert_close(tensor, results[1][1][name], rtol=1e-4, atol=2e-5)


def test_zero_advantages_leave_the_policy_unchanged_by_the_loss(tiny_model):
    backend = _backend(tiny_model)
    batch = random_batch(backend.model.config.vocab_size)
    batch.advantages.zero_()
    metrics = backend.step(batch)
    assert metrics["loss"] == 0.0 and metrics["grad_norm"] == 0.0


def test_logprobs_agree_with_the_rollout_engine(tiny_model):
    backend = _backend(tiny_model)
    engine = HFRolloutEngine(tiny_model)
    batch = random_batch(backend.model.config.vocab_size, rows=3)
    values = backend.logprobs(batch)
    with torch.no_grad():
        logits = engine.model(batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]
    mask = batch.loss_mask[:, 1:]
    torch.testing.assert_close(values[:, 1:] * mask, expected * mask, atol=1e-4, rtol=1e-4)


def test_normalizer_is_global():
    config = load_config(None, ["challenger.max_new_tokens=100", "reasoner.max_new_tokens=50"])
    batch = random_batch(100, rows=4)
    assert loss_normalizer(config, batch) == 400.0
    config.loss.aggregation = "token_mean"
    assert loss_normalizer(config, batch) == float(batch.loss_mask.sum())
    config.loss.aggregation = "seq_mean"
    assert loss_normalizer(config, batch) == 4.0


def test_checkpoint_round_trip(tiny_model, tmp_path):
    backend = _backend(tiny_model)
    backend.step(random_batch(backend.model.config.vocab_size))
    backend.save_checkpoint(tmp_path)
    saved = {n: t.clone() for n, t in backend.named_weights()}
    other = _backend(tiny_model)
    other.load_checkpoint(tmp_path)
    for name, tensor in other.named_weights():
        assert torch.equal(tensor, saved[name]), name
    assert other.optimizer.state_dict()["state"].keys() == backend.optimizer.state_dict()["state"].keys()
    # the checkpoint's model folder is a complete HF model: the rollout engine loads it directly
    assert HFRolloutEngine(tmp_path / "model").tokenizer.eos_token == "<|im_end|>"


@pytest.mark.distributed
def test_ddp_two_processes_match_one_process(tiny_model, tmp_path):
    outputs = {}
    for world in (1, 2):
        out = tmp_path / f"world{world}.safetensors"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={world}", str(ROOT / "tests" / "ddp_worker.py"),
                        str(tiny_model), str(out)], check=True, env=env, cwd=ROOT, timeout=300)
        outputs[world] = load_file(out)
    assert outputs[1]["loss"].item() == pytest.approx(outputs[2]["loss"].item(), rel=1e-5)
    for name, tensor in outputs[1].items():
        torch.testing.assert_close(outputs[2][name], tensor, rtol=1e-4, atol=2e-5)


def _weights_after_step(tiny_model, batch, *overrides):
    torch.manual_seed(0)
    backend = _backend(tiny_model, *overrides)
    metrics = backend.step(batch)
    return metrics, {n: t.clone() for n, t in backend.named_weights()}


def _max_difference(a, b):
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_clipping_changes_the_update_only_with_several_ppo_epochs(tiny_model):
    batch = random_batch(49152, rows=4)
    wide = ("loss.clip_low=0.999", "loss.clip_high=1000")  # no ratio reaches these bounds
    tight = ("loss.clip_low=0.0001", "loss.clip_high=0.0001")
    one_tight, one_tight_weights = _weights_after_step(tiny_model, batch, "optim.ppo_epochs=1", *tight)
    _, one_wide_weights = _weights_after_step(tiny_model, batch, "optim.ppo_epochs=1", *wide)
    assert _max_difference(one_tight_weights, one_wide_weights) == 0.0  # ratio 1: clipping cannot act
    assert "clip_fraction" not in one_tight
    two_tight, two_tight_weights = _weights_after_step(tiny_model, batch, "optim.ppo_epochs=2", *tight)
    two_wide, two_wide_weights = _weights_after_step(tiny_model, batch, "optim.ppo_epochs=2", *wide)
    assert two_wide["clip_fraction"] == 0.0 and two_tight["clip_fraction"] > 0.5
    assert _max_difference(two_tight_weights, two_wide_weights) > 1e-6
    # the first epoch is the ppo_epochs=1 step: same loss, same gradient norm
    assert two_tight["loss"] == pytest.approx(one_tight["loss"]) and two_tight["grad_norm"] == pytest.approx(
        one_tight["grad_norm"])
    assert _max_difference(two_wide_weights, one_wide_weights) > 1e-6  # a second step was taken


def test_old_logprobs_are_the_policy_before_the_first_update(tiny_model, monkeypatch):
    backend = _backend(tiny_model, "optim.ppo_epochs=3", "optim.micro_batch_size=2")
    batch = random_batch(backend.model.config.vocab_size, rows=4)
    before = backend.logprobs(batch)
    seen = []
    real = backend._loss

    def spy(micro, normalizer, hidden, old_logprobs=None):
        seen.append(None if old_logprobs is None else old_logprobs.clone())
        return real(micro, normalizer, hidden, old_logprobs)

    monkeypatch.setattr(backend, "_loss", spy)
    backend.step(batch)
    assert len(seen) == 3 * 2 and seen[0] is None and seen[1] is None  # first epoch: the current policy
    expected = [before[rows, 1:][batch.loss_mask[rows, 1:] > 0] for rows in (slice(0, 2), slice(2, 4))]
    for epoch in (1, 2):
        for micro in (0, 1):
            torch.testing.assert_close(seen[2 * epoch + micro], expected[micro], rtol=1e-5, atol=1e-5)
