"""`spice bench scoring`: the fused scoring kernel (CUDA) against its compiled CPU twin.

Times `spice.scoring.score_iteration` on CPU tensors (the C++ twin) and on CUDA tensors (the kernels,
inputs already on the GPU, CUDA events) at T x G tasks with one challenger and G reasoner rows per task,
L tokens a row, and checks that both give bitwise equal outputs. The target of issue 18: the kernel
at least 10x faster than the twin at T x G = 128 x 8. Also runnable as `python -m spice.bench.scoring`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice bench scoring`."""
    parser.add_argument("--shapes", nargs="+", default=["128x8", "1024x8", "12288x16", "512x512"],
                        help="T x G shapes (tasks x answers per task)")
    parser.add_argument("--tokens", type=int, default=2048, help="L, tokens per training row")
    parser.add_argument("--max-rows", type=int, default=20000, help="cap on S, the training rows")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")


def _inputs(t: int, g: int, tokens: int, max_rows: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(t * 1000 + g)
    rows = min(t * (g + 1), max_rows)
    source = torch.arange(rows) % (t + t * g)  # challenger rows first, then the reasoner rows
    return (torch.randint(0, 2, (t, g), generator=gen, dtype=torch.int8), torch.rand(t, generator=gen) > 0.1,
            torch.zeros(t, dtype=torch.int32), source, (torch.rand(rows, tokens, generator=gen) > 0.3).float())


def _time_cpu(inputs: tuple, repeats: int) -> float:
    from spice.scoring import score_iteration

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        score_iteration(*inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _time_cuda(inputs: tuple, repeats: int) -> float:
    from spice.scoring import score_iteration

    score_iteration(*inputs)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        score_iteration(*inputs)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _bitwise_equal(a: tuple, b: tuple) -> bool:
    return all(torch.equal(x.cpu().view(torch.int32), y.view(torch.int32)) for x, y in zip(a, b))


def run(args: argparse.Namespace) -> int:
    """Time both sides at every shape and print one table; 1 if the kernel and twin ever differ."""
    from spice.scoring import score_iteration

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "no GPU"
    print(f"date: {datetime.date.today().isoformat()}\ndevice: {device}, CPU threads {torch.get_num_threads()}")
    print("| T x G | rows x L | CPU twin ms | CUDA ms | speed-up | bitwise equal |\n|---|---|---|---|---|---|")
    rows, mismatch = [], False
    for shape in args.shapes:
        t, g = (int(x) for x in shape.lower().split("x"))
        cpu_inputs = _inputs(t, g, args.tokens, args.max_rows)
        row = {"T": t, "G": g, "rows": cpu_inputs[3].numel(), "L": args.tokens,
               "cpu_seconds": _time_cpu(cpu_inputs, args.repeats)}
        if cuda:
            gpu_inputs = tuple(x.cuda() for x in cpu_inputs)
            row["cuda_seconds"] = _time_cuda(gpu_inputs, args.repeats)
            row["speedup"] = row["cpu_seconds"] / row["cuda_seconds"]
            row["bitwise_equal"] = _bitwise_equal(score_iteration(*gpu_inputs), score_iteration(*cpu_inputs))
            mismatch |= not row["bitwise_equal"]
        rows.append(row)
        gpu = (f"{row['cuda_seconds'] * 1e3:.3f} | {row['speedup']:.1f}x | {row['bitwise_equal']}" if cuda
               else "- | - | skipped: needs a CUDA GPU")
        print(f"| {t} x {g} | {row['rows']} x {args.tokens} | {row['cpu_seconds'] * 1e3:.3f} | {gpu} |", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": device, "results": rows}, indent=2))
    return 1 if mismatch else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m spice.bench.scoring`."""
    parser = argparse.ArgumentParser(prog="spice bench scoring", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
