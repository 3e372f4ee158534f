"""Worker for tests/test_megatron_distributed.py, started by torchrun (or as one process).

For each model folder and each TP x PP layout: build `MegatronBackend`, compute per-token logprobs,
take one step with lr=0 and no clipping, gather the gradients and weights under HF names, and compare
them with a plain Hugging Face forward/backward through `spice.grpo.grpo_loss_reference` on the same
batch. Rank 0 writes the measured differences as JSON for the test to judge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spice.config import SpiceConfig, load_config  # noqa: E402
from spice.grpo import grpo_loss_reference  # noqa: E402
from spice.train.base import Batch  # noqa: E402
from spice.train.torch_backend import loss_normalizer  # noqa: E402


def make_batch(vocab: int) -> Batch:
    """Four sequences of different lengths, right-padded, prompts unmasked, random advantages."""
    generator = torch.Generator().manual_seed(1)
    rows, width = 4, 14
    input_ids = torch.randint(0, vocab, (rows, width), generator=generator)
    lengths = [14, 11, 9, 12]
    attention = torch.zeros(rows, width, dtype=torch.long)
    for row, length in enumerate(lengths):
        attention[row, :length] = 1
    loss_mask = attention.clone()
    loss_mask[:, :5] = 0
    advantages = torch.randn(rows, 1, generator=generator).expand(rows, width) * loss_mask
    rollout = (-3.0 - torch.rand(rows, width, generator=generator)) * loss_mask
    return Batch(input_ids, attention, loss_mask.float(), advantages.contiguous(), rollout,
                 ["challenger", "reasoner", "reasoner", "reasoner"])


def reference(model_dir: Path, config: SpiceConfig, batch: Batch) -> dict:
    """Loss, logprobs [S, T] and gradients (HF names) of a plain transformers forward/backward."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    mask = batch.loss_mask[:, 1:]
    keep = mask.reshape(-1) > 0
    sequence_ids = torch.arange(mask.shape[0]).unsqueeze(1).expand_as(mask).reshape(-1)[keep]
    advantages = batch.advantages[:, 1:].reshape(-1)[keep]
    loss, logp = grpo_loss_reference(
        hidden[:, :-1].reshape(-1, hidden.shape[-1])[keep], model.get_output_embeddings().weight,
        batch.input_ids[:, 1:].reshape(-1)[keep], advantages, torch.ones_like(advantages),
        rollout_logprobs=batch.rollout_logprobs[:, 1:].reshape(-1)[keep], tis_cap=config.loss.tis_cap,
        clip_low=config.loss.clip_low, clip_high=config.loss.clip_high, aggregation=config.loss.aggregation,
        normalizer=loss_normalizer(config, batch), sequence_ids=sequence_ids)
    loss.backward()
    dense = torch.zeros(mask.shape)
    dense.reshape(-1)[keep] = logp.detach()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return {"loss": float(loss), "logprobs": torch.nn.functional.pad(dense, (1, 0)), "grads": grads}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def check_layout(model_dir: Path, tp: int, pp: int, recompute: bool, batch: Batch, ref: dict, out: Path) -> dict:
    from megatron.core import parallel_state as ps
    from safetensors.torch import load_file

    from spice.train.megatron.backend import MegatronBackend

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    config = load_config(None, [
        "train.backend=megatron", "train.megatron.bf16=false", f"train.megatron.tensor_model_parallel_size={tp}",
        f"train.megatron.pipeline_model_parallel_size={pp}", "optim.micro_batch_size=2",
        "optim.grad_clip=1.0e9", "loss.tis_cap=2.0", "rollout.sglang.bucket_megabytes=1"]
        + (["train.megatron.recompute_granularity=full", "train.megatron.recompute_method=uniform",
            "train.megatron.recompute_num_layers=1"] if recompute else []))
    config.optim.lr = 0.0  # the step must leave the weights as loaded (a run's config refuses lr=0)
    backend = MegatronBackend(config, model_dir)
    logprobs = backend.logprobs(batch)
    metrics = backend.step(batch)
    grads = {n: t.clone() for bucket in backend.hf_buckets(grads=True) for n, t in bucket}
    exported = dict(backend.named_weights())
    on_disk = load_file(str(model_dir / "model.safetensors"))
    result = {
        "layout": f"tp{tp}_pp{pp}_dp{backend.layout.dp_size}" + ("_recompute" if recompute else ""),
        "loss_error": abs(metrics["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-12),
        "logprob_error": float((logprobs - ref["logprobs"]).abs().max()),
        "grad_error": max(relative(grads[n], ref["grads"][n]) for n in grads),
        "grad_names_match": sorted(grads) == sorted(n for n in ref["grads"] if n in on_disk),
        "roundtrip_exact": sorted(exported) == sorted(on_disk)
        and all(torch.equal(exported[n], on_disk[n]) for n in on_disk),
        "grad_norm": metrics["grad_norm"],
        "ref_grad_norm": float(torch.sqrt(sum((g ** 2).sum() for n, g in ref["grads"].items() if n in on_disk))),
    }
    if tp * pp == 2:
        result.update(train_and_export(backend, out / f"{model_dir.name}_{result['layout']}", batch, on_disk))
    return result


def train_and_export(backend, folder: Path, batch: Batch, before: dict) -> dict:  # noqa: ANN001
    """A real step, then HF export and a checkpoint round trip."""
    from safetensors.torch import load_file

    for group in backend.optimizer.param_groups:
        group["lr"] = 1e-2
    backend.step(batch)
    after = dict(backend.named_weights())
    backend.save_hf(folder / "hf")
    saved = {}
    if backend.layout.rank == 0:
        for file in sorted((folder / "hf").glob("*.safetensors")):
            saved.update(load_file(str(file)))
    backend.save_checkpoint(str(folder / "ckpt"))
    next_logprobs = backend.logprobs(batch)
    backend.step(batch)
    backend.load_checkpoint(str(folder / "ckpt"))
    restored = dict(backend.named_weights())
    return {
        "weights_changed": any(not torch.equal(after[n], before[n]) for n in before),
        "save_hf_exact": backend.layout.rank != 0 or (
            sorted(saved) == sorted(after) and all(torch.equal(saved[n], after[n]) for n in after)),
        "checkpoint_exact": all(torch.equal(restored[n], after[n]) for n in after),
        "logprobs_after_restore": float((backend.logprobs(batch) - next_logprobs).abs().max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument("--layouts", nargs="+", default=["2x1", "1x2", "1x1r"],
                        help="TPxPP, with a trailing r for full activation recomputation")
    args = parser.parse_args()
    results = []
    for model_dir in args.models:
        config = load_config(None, ["loss.tis_cap=2.0"])
        vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
        batch = make_batch(vocab)
        ref = reference(model_dir, config, batch)
        for layout in args.layouts:
            tp, pp = (int(x) for x in layout.rstrip("r").split("x"))
            result = check_layout(model_dir, tp, pp, layout.endswith("r"), batch, ref, args.out)
            result["model"] = model_dir.name
            results.append(result)
    if not dist.is_initialized() or dist.get_rank() == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
