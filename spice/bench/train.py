"""`spice bench train`: tokens/s and model FLOPs utilisation of one Megatron training step.

Writes a randomly initialised Llama-architecture checkpoint of the chosen size (no download), builds
`MegatronBackend` on it under the given TP x PP (run under torchrun for more than one GPU) and times
full `step()` calls (forward, GRPO loss, backward, optimizer) on a batch of random tokens. MFU is
the model FLOPs of the step (6 x matmul parameters per token plus attention, the PaLM / Megatron
convention) over the elapsed time and the peak dense bf16 throughput of all GPUs used.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

# Llama-architecture shapes: (hidden, layers, heads, kv heads, ffn, vocab).
PRESETS = {
    "1b": (2048, 16, 32, 8, 8192, 128256),  # Llama-3.2-1B shape, 1.24 B parameters
    "tiny": (64, 2, 4, 2, 128, 4096),
}
# Peak dense bf16 tensor-core FLOP/s by device name (vendor data sheets, SXM parts).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "GH200": 989e12}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="model size (default: 1b on a GPU, tiny on a CPU)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 4096; 64 on CPU)")
    parser.add_argument("--micro-batch-size", type=int, default=None, help="sequences per micro-batch (default 2)")
    parser.add_argument("--global-batch", type=int, default=None, help="sequences per step (default 8 x DP)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--tp", type=int, default=1, help="tensor_model_parallel_size")
    parser.add_argument("--pp", type=int, default=1, help="pipeline_model_parallel_size")
    parser.add_argument("--fp8", default=None, help="Transformer Engine fp8 format (e4m3 | hybrid)")
    parser.add_argument("--fp8-recipe", default="delayed", help="delayed | tensorwise | mxfp8 | blockwise")
    parser.add_argument("--transformer-impl", default="auto", choices=["auto", "transformer_engine", "local"],
                        help="train.megatron.transformer_impl: local is megatron-core's own layer spec (no TE)")
    parser.add_argument("--recompute", default=None, help="recompute_granularity: full | selective")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s per device "
                        "(default: looked up from the device name)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")


def write_random_checkpoint(path: Path, preset: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """A Llama-architecture HF folder with random weights (no download needed)."""
    from safetensors.torch import save_file

    from spice.train.megatron.model import read_hf_arch
    from spice.train.megatron.weights import hf_names, hf_shape

    hidden, layers, heads, kv_heads, ffn, vocab = PRESETS[preset]
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "intermediate_size": ffn, "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
              "max_position_embeddings": 131072, "tie_word_embeddings": True, "hidden_act": "silu"}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    arch = read_hf_arch(path)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in hf_names(arch):
        shape = hf_shape(arch, name)
        value = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=generator) * 0.02
        tensors[name] = value.to(dtype)
    save_file(tensors, str(path / "model.safetensors"))
    return path


def step_flops(preset: str, seq_len: int, sequences: int) -> float:
    """Model FLOPs of forward + backward: 6 per matmul parameter per token (output projection
    included) plus 12 x layers x hidden x seq_len per token for attention scores and values."""
    hidden, layers, heads, kv_heads, ffn, vocab = PRESETS[preset]
    head_dim = hidden // heads
    per_layer = hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden + 3 * hidden * ffn
    matmul_params = layers * per_layer + vocab * hidden
    per_token = 6 * matmul_params + 12 * layers * heads * head_dim * seq_len
    return float(per_token) * seq_len * sequences


def peak_flops(override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16.items():
        if key in name:
            return value
    return None


def run(args: argparse.Namespace) -> int:
    from spice.config import load_config
    from spice.train.base import Batch
    from spice.train.megatron.backend import MegatronBackend

    cuda = torch.cuda.is_available()
    preset = args.preset or ("1b" if cuda else "tiny")
    seq_len = args.seq_len or (4096 if cuda else 64)
    micro = args.micro_batch_size or 2
    if not cuda and os.environ.get("RANK", "0") == "0":
        print("spice bench train: no CUDA device; running on the CPU in fp32 to show the path works "
              "(its numbers say nothing about GPU throughput)")
    overrides = ["train.backend=megatron", f"train.megatron.tensor_model_parallel_size={args.tp}",
                 f"train.megatron.pipeline_model_parallel_size={args.pp}", f"train.megatron.bf16={str(cuda).lower()}",
                 f"train.megatron.transformer_impl={args.transformer_impl}",
                 f"optim.micro_batch_size={micro}", "optim.lr=1e-6", f"challenger.max_new_tokens={seq_len}",
                 f"reasoner.max_new_tokens={seq_len}"]
    if args.fp8:
        overrides += [f"train.megatron.fp8={args.fp8}", f"train.megatron.fp8_recipe={args.fp8_recipe}"]
    if args.recompute:
        overrides += [f"train.megatron.recompute_granularity={args.recompute}", "train.megatron.recompute_method=uniform",
                      "train.megatron.recompute_num_layers=1"]
    config = load_config(None, overrides)
    with tempfile.TemporaryDirectory(prefix="spice-bench-train-") as tmp:
        # Every rank writes its own copy (same seed): no shared file system is assumed.
        model_dir = write_random_checkpoint(Path(tmp) / preset, preset,
                                            dtype=torch.bfloat16 if cuda else torch.float32)
        backend = MegatronBackend(config, model_dir)
    layout = backend.layout
    sequences = args.global_batch or 8 * layout.dp_size
    vocab = PRESETS[preset][5]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (sequences, seq_len), generator=generator)
    ones = torch.ones(sequences, seq_len)
    batch = Batch(ids, ones.long(), ones, torch.randn(sequences, 1, generator=generator).expand(-1, seq_len).contiguous(),
                  -torch.rand(sequences, seq_len, generator=generator), ["reasoner"] * sequences)
    for _ in range(args.warmup):
        backend.step(batch)
    if cuda:
        torch.cuda.synchronize()
    if dist.is_initialized():
        dist.barrier()
    started = time.perf_counter()
    for _ in range(args.steps):
        backend.step(batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / max(args.steps, 1)
    tokens = sequences * seq_len
    flops = step_flops(preset, seq_len, sequences)
    peak = peak_flops(args.peak_tflops)
    result = {
        "preset": preset, "seq_len": seq_len, "global_batch": sequences, "micro_batch_size": micro,
        "tp": layout.tp_size, "pp": layout.pp_size, "dp": layout.dp_size, "devices": layout.world_size,
        "dtype": "bf16" if cuda else "fp32", "fp8": args.fp8, "recompute": args.recompute,
        "transformer_impl": args.transformer_impl,
        "distributed_optimizer": config.train.megatron.use_distributed_optimizer and cuda,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "seconds_per_step": seconds, "tokens_per_second": tokens / seconds,
        "tokens_per_second_per_device": tokens / seconds / layout.world_size,
        "model_tflops_per_device": flops / seconds / layout.world_size / 1e12,
        "mfu": flops / seconds / (layout.world_size * peak) if peak else None,
    }
    if layout.rank == 0:
        for key, value in result.items():
            print(f"{key:>30}: {value:.4g}" if isinstance(value, float) else f"{key:>30}: {value}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
