"""`spice bench verify`: pairs per second of math-verify alone, the compiled fast path alone and the
combined verifier on the agreement suite (a realistic mix), with their verdicts checked to be the same,
and the worst single-item latency of the combined path."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from spice import verify as V
from spice.verify import pool as P

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "verify_agreement.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `spice bench verify`."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="jsonl with response, gold, kind per line (default: the agreement suite)")
    parser.add_argument("--source", default=None,
                        help="only rows whose 'source' field is this (e.g. 'template': the realistic outputs)")
    parser.add_argument("--repeat", type=int, default=200, help="passes of the fast path over the data")
    parser.add_argument("--workers", type=int, default=None, help="math-verify worker processes")
    parser.add_argument("--timeout", type=float, default=V.DEFAULT_TIMEOUT_S, help="per-item math-verify timeout (s)")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")


def _fresh_pool() -> int:
    """Restart the math-verify workers, so that no pass profits from the parse cache of an earlier one,
    and start them on a pair outside the data; returns the timeouts counted by the pool it replaced."""
    timeouts = P._POOL.timeouts if P._POOL is not None else 0
    V.shutdown()
    V.slow_verdicts([("\\boxed{y^3+7}", "7+y^3", "expression")])
    return timeouts


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def run(args: argparse.Namespace) -> int:
    """Measure, check the verdicts agree, print a table (or JSON); 1 if verdicts differ."""
    if V._C is None:
        print("spice bench verify: spice._C is not built; install the package first")
        return 2
    lines = Path(args.data).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    rows = [r for r in rows if args.source is None or r.get("source") == args.source]
    items = [(r["response"], r["gold"], r["kind"]) for r in rows]
    V.configure(workers=args.workers, timeout=args.timeout)
    timeouts = _fresh_pool()

    start = time.perf_counter()
    for _ in range(args.repeat):
        fast = V.fast_verdicts(items)
    fast_s = (time.perf_counter() - start) / args.repeat
    decided = [i for i, v in enumerate(fast) if v != V.UNDECIDED]
    decided_items = [items[i] for i in decided]
    start = time.perf_counter()
    for _ in range(args.repeat):
        V.fast_verdicts(decided_items)
    fast_decided_s = (time.perf_counter() - start) / args.repeat

    start = time.perf_counter()
    slow = V.slow_verdicts(items)
    slow_s = time.perf_counter() - start
    timeouts += _fresh_pool()
    start = time.perf_counter()
    V.slow_verdicts(decided_items)
    slow_decided_s = time.perf_counter() - start

    timeouts += _fresh_pool()
    start = time.perf_counter()
    combined = V.verify_batch(items)
    combined_s = time.perf_counter() - start

    timeouts += _fresh_pool()
    worst, worst_item = 0.0, None
    for item in items:
        start = time.perf_counter()
        V.verify(*item)
        elapsed = time.perf_counter() - start
        if elapsed > worst:
            worst, worst_item = elapsed, item

    fast_disagree = sum((fast[i] == V.EQUIVALENT) != slow[i] for i in decided)
    combined_disagree = sum(c != s for c, s in zip(combined, slow))
    result = {
        "pairs": len(items), "decided": len(decided), "undecided_share": round(1 - len(decided) / len(items), 4),
        "math_verify_pairs_per_s": round(_rate(len(items), slow_s), 1),
        "math_verify_decided_pairs_per_s": round(_rate(len(decided), slow_decided_s), 1),
        "fast_pairs_per_s": round(_rate(len(items), fast_s), 1),
        "fast_decided_pairs_per_s": round(_rate(len(decided), fast_decided_s), 1),
        "combined_pairs_per_s": round(_rate(len(items), combined_s), 1),
        "speedup_decided": round(slow_decided_s / fast_decided_s, 1),
        "speedup_mix": round(slow_s / combined_s, 1),
        "max_item_latency_s": round(worst, 3), "slowest_item": [s[-60:] for s in worst_item] if worst_item else None,
        "fast_vs_math_verify_disagreements": fast_disagree, "combined_vs_math_verify_disagreements": combined_disagree,
        "math_verify_timeouts": timeouts + V.get_pool().timeouts,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:40s} {value}")
    V.shutdown()
    return 0 if fast_disagree == 0 and combined_disagree == 0 else 1


def main() -> int:
    """Run as `python -m spice.bench.verify` until the CLI wires `spice bench verify`."""
    parser = argparse.ArgumentParser(prog="spice bench verify", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
