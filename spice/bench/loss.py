"""`spice bench loss`: forward+backward time and peak memory of the GRPO loss implementations.

Compares the fused Triton kernel (`spice.kernels.fused_grpo_loss`), the naive torch reference that
materialises fp32 logits (`spice.grpo.grpo_loss_reference`) and, when installed, three baselines at the
same shapes and dtypes: Liger-Kernel's chunked `LigerFusedLinearGRPOLoss` (dr_grpo, torch.compile),
Liger-Kernel's `LigerFusedLinearCrossEntropyLoss(reduction="none")` and Apple's Cut Cross-Entropy
(`linear_cross_entropy(reduction="none")`, its default gradient filter); the last two give per-token
logprobs that go through the same `policy_loss` as ours. On CUDA the shapes of issue 4 (N in {4096,
16384}, H = 4096, V = 151936, bf16); on a CPU only the reference runs, at the --cpu-* shape.
Also runnable as `python -m spice.bench.loss`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

IMPLEMENTATIONS = ("fused", "reference", "liger-grpo", "liger-flce", "cce")
GPU_ONLY = ("fused", "liger-grpo", "liger-flce", "cce")  # Triton kernels: no CPU path
PACKAGES = {"liger-grpo": "liger-kernel==0.8.5", "liger-flce": "liger-kernel==0.8.5",
            "cce": "cut-cross-entropy==25.1.1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice bench loss`."""
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384], help="N values on CUDA")
    parser.add_argument("--hidden", type=int, default=4096, help="H on CUDA")
    parser.add_argument("--vocab", type=int, default=151936, help="V on CUDA (Qwen3's vocabulary)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--cpu-tokens", type=int, nargs="+", default=[256, 1024], help="N values on CPU")
    parser.add_argument("--cpu-hidden", type=int, default=512, help="H on CPU")
    parser.add_argument("--cpu-vocab", type=int, default=32768, help="V on CPU")
    parser.add_argument("--cpu-dtype", default="float32", choices=["bfloat16", "float32"],
                        help="dtype on CPU (bf16 matmuls are ~3x slower than fp32 on CPUs)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--sequence-length", type=int, default=1024,
                        help="tokens per sequence (Liger takes [B, T] batches)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name, dist_name in (("triton", "triton"), ("liger_kernel", "liger-kernel"),
                            ("cut_cross_entropy", "cut-cross-entropy")):
        try:
            versions[name] = importlib.metadata.version(dist_name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _command() -> str:
    """The command line as typed: `python -m spice.bench.loss ...` or `spice bench loss ...`."""
    if Path(sys.argv[0]).name == "loss.py":
        return "python -m spice.bench.loss " + shlex.join(sys.argv[1:])
    return "spice " + shlex.join(sys.argv[1:])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads, no GPU"


class _CpuPeak:
    """Peak resident memory above the starting point, from Linux's VmHWM (reset via clear_refs)."""

    def __enter__(self) -> _CpuPeak:
        self.start = self._read("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.start = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = None if self.start is None else self._read("VmHWM") - self.start

    @staticmethod
    def _read(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/self/status has no {field}")


def _inputs(n: int, h: int, v: int, dtype: torch.dtype, device: torch.device, seq_len: int) -> dict:
    """Seeded random inputs drawn on the device itself (a 151936 x 4096 draw on the CPU takes seconds);
    one advantage per sequence of seq_len tokens, as in GRPO, so every implementation computes one loss."""
    g = torch.Generator(device=device).manual_seed(0)
    sequences = -(-n // seq_len)
    return {
        "hidden": torch.randn(n, h, generator=g, device=device).to(dtype),
        "weight": (torch.randn(v, h, generator=g, device=device) * 0.02).to(dtype),
        "targets": torch.randint(0, v, (n,), generator=g, device=device),
        "advantages": torch.randn(sequences, generator=g, device=device).repeat_interleave(seq_len)[:n],
        "mask": torch.ones(n, device=device),
    }


def _runner(name: str, x: dict, seq_len: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A function (hidden, weight) -> scalar loss for one implementation."""
    n = x["hidden"].shape[0]
    if name == "reference":
        from spice.grpo import grpo_loss_reference

        return lambda h, w: grpo_loss_reference(
            h, w, x["targets"], x["advantages"], x["mask"], normalizer=float(n)
        )[0]
    if name == "fused":
        from spice.kernels import fused_grpo_loss

        return lambda h, w: fused_grpo_loss(h, w, x["targets"], x["advantages"], x["mask"], normalizer=float(n))[0]
    if name == "liger-grpo":
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

        if n % seq_len:
            raise ValueError(f"--sequence-length {seq_len} does not divide N = {n}")
        batch = n // seq_len
        liger = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, loss_type="dr_grpo",
                                         max_completion_length=seq_len)
        ids = x["targets"].view(batch, seq_len)
        mask = x["mask"].view(batch, seq_len)
        advantages = x["advantages"].view(batch, seq_len)[:, 0].contiguous()  # Liger: one per sequence
        return lambda h, w: liger(h.view(batch, seq_len, -1), w, ids, mask, advantages)[0]
    from spice.grpo import policy_loss

    if name == "liger-flce":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        flce = LigerFusedLinearCrossEntropyLoss(reduction="none")
        logprobs = lambda h, w: -flce(w, h, x["targets"])  # noqa: E731
    else:
        from cut_cross_entropy import linear_cross_entropy

        logprobs = lambda h, w: -linear_cross_entropy(h, w, x["targets"], reduction="none")  # noqa: E731
    return lambda h, w: policy_loss(logprobs(h, w), x["advantages"], x["mask"], normalizer=float(n))


def _measure(fn: Callable, x: dict, device: torch.device, warmup: int, repeats: int) -> dict:
    """Median forward+backward seconds, peak extra memory (bytes) and the loss value of fn (the loss
    and the gradient norms let rows be compared: every implementation gets the same inputs)."""
    hidden = x["hidden"].clone().requires_grad_()
    weight = x["weight"].clone().requires_grad_()
    losses = []

    def step() -> None:
        hidden.grad = weight.grad = None
        loss = fn(hidden, weight)
        loss.backward()
        losses.append(loss.detach())
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    times = []
    peak = None
    for _ in range(repeats):
        hidden.grad = weight.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            peak = torch.cuda.max_memory_allocated(device) - base
        else:
            with _CpuPeak() as tracker:
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            peak = tracker.peak
    return {"seconds": statistics.median(times), "peak_bytes": peak, "loss": float(losses[-1]),
            "grad_hidden_norm": float(hidden.grad.float().norm()),
            "grad_weight_norm": float(weight.grad.float().norm())}


def _benchmark(name: str, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device,
               args: argparse.Namespace) -> dict:
    n, h, v = shape
    row = {"implementation": name, "N": n, "H": h, "V": v, "dtype": str(dtype).removeprefix("torch.")}
    if name in GPU_ONLY and device.type != "cuda":
        return {**row, "status": "skipped: needs a CUDA GPU (Triton kernels)"}
    try:
        x = _inputs(n, h, v, dtype, device, args.sequence_length)
        row.update(_measure(_runner(name, x, args.sequence_length), x, device, args.warmup, args.repeats))
        row["status"] = "ok"
    except ImportError as err:
        row["status"] = f"skipped: {err.name or err} not installed (pip install {PACKAGES.get(name, err.name)})"
    except torch.cuda.OutOfMemoryError:
        row["status"] = "out of memory"
    except Exception as err:  # a baseline that cannot run here is a row, not the end of the benchmark
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        row["status"] = f"failed: {type(err).__name__}: {reason}"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _format(rows: list[dict]) -> str:
    lines = ["| implementation | N | H | V | dtype | fwd+bwd ms | peak extra memory MiB | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = f"{r['seconds'] * 1e3:.1f}" if "seconds" in r else "-"
        mib = f"{r['peak_bytes'] / 2**20:.0f}" if r.get("peak_bytes") is not None else "-"
        lines.append(f"| {r['implementation']} | {r['N']} | {r['H']} | {r['V']} | {r['dtype']} | {ms} | {mib} "
                     f"| {r['status']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Measure every implementation at every shape and print a table with device, versions and command."""
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.device == "cuda" and not torch.cuda.is_available():
        print("spice bench loss: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    device = torch.device("cuda" if use_cuda else "cpu")
    if use_cuda:
        shapes = [(n, args.hidden, args.vocab) for n in args.tokens]
        dtype = getattr(torch, args.dtype)
    else:
        shapes = [(n, args.cpu_hidden, args.cpu_vocab) for n in args.cpu_tokens]
        dtype = getattr(torch, args.cpu_dtype)
    header = {
        "date": datetime.date.today().isoformat(),
        "device": _device_name(device),
        "versions": _versions(),
        "command": _command(),
    }
    print(f"device: {header['device']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()))
    print(f"command: {header['command']}")
    print(f"date: {header['date']}")
    if not use_cuda:
        print("note: the fused Triton kernel, Liger-Kernel and Cut Cross-Entropy need a CUDA GPU; on CPU only "
              "the torch reference (materialised fp32 logits) is measured, at a smaller shape.")
    rows = []
    for shape in shapes:
        for name in args.implementations:
            rows.append(_benchmark(name, shape, dtype, device, args))
            print(_format(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(_format(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({**header, "results": rows}, indent=2))
    ours_failed = [r for r in rows
                   if r["implementation"] in ("fused", "reference") and r["status"].startswith("failed")]
    return 1 if ours_failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m spice.bench.loss`."""
    parser = argparse.ArgumentParser(prog="spice bench loss", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
