"""`spice bench verify`: pairs per second of math-verify alone, the compiled fast path alone and the
combined verifier on the agreement suite (a realistic mix); the fast path checked against the Python
reference path, the combined verdicts against math-verify on the rows where math-verify is right (the
suite's labels), and the worst single-item latency of the combined path. `--adversarial N` times N
pathological answers instead."""

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
    parser.add_argument("--adversarial", type=int, default=0, metavar="N",
                        help="instead: time N pathological answers (3000 nested parentheses, towers, huge numbers)")


def _fresh_pool() -> int:
    """Restart the math-verify workers, so that no pass profits from the parse cache of an earlier one,
    and start them on a pair outside the data; returns the timeouts counted by the pool it replaced."""
    timeouts = P._POOL.timeouts if P._POOL is not None else 0
    V.shutdown()
    V.slow_verdicts([("\\boxed{y^3+7}", "7+y^3", "expression")])
    return timeouts


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def adversarial_items(n: int) -> list[tuple[str, str, str]]:
    """`n` answers built to be slow for math-verify: deep nesting (most), towers and huge numbers."""
    shapes = ["(" * 3000 + "5" + ")" * 3000, "{" * 3000 + "5" + "}" * 3000, "9^{9^{9^{9}}}", "9" * 5000 + "!"]
    return [("\\boxed{" + shapes[0 if i % 8 else (i // 8) % len(shapes)] + "}", "5", "expression") for i in range(n)]


def run_adversarial(n: int, as_json: bool) -> int:
    """Time `verify_batch` on pathological answers with the workers started; 1 if any is judged correct."""
    items = adversarial_items(n)
    _fresh_pool()
    start = time.perf_counter()
    verdicts = V.verify_batch(items)
    seconds = time.perf_counter() - start
    result = {"answers": n, "seconds": round(seconds, 3), "judged_correct": sum(verdicts),
              "math_verify_timeouts": V.get_pool().timeouts}
    print(json.dumps(result) if as_json else "\n".join(f"{k:24s} {v}" for k, v in result.items()))
    V.shutdown()
    return 0 if not any(verdicts) else 1


def run(args: argparse.Namespace) -> int:
    """Measure, check the verdicts agree, print a table (or JSON); 1 if verdicts differ."""
    if args.adversarial:
        return run_adversarial(args.adversarial, args.json)
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
    mv = V.slow_verdicts(items, framed=False)
    slow_s = time.perf_counter() - start
    timeouts += _fresh_pool()
    start = time.perf_counter()
    V.slow_verdicts(decided_items, framed=False)
    slow_decided_s = time.perf_counter() - start
    timeouts += _fresh_pool()
    slow = V.slow_verdicts(items)  # the reference path: math-verify framed to follow the mathematics

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
    expected = [r.get("expected") for r in rows]
    right = [i for i, e in enumerate(expected) if e is not None and mv[i] == e]
    combined_disagree = sum(combined[i] != mv[i] for i in right)
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
        "fast_vs_reference_disagreements": fast_disagree,
        "combined_vs_math_verify_where_it_is_right": combined_disagree,
        "math_verify_wrong_rows": sum(e is not None and m != e for m, e in zip(mv, expected)),
        "combined_wrong_rows": sum(e is not None and c != e for c, e in zip(combined, expected)),
        "combined_false_accepts": sum(e is False and c for c, e in zip(combined, expected)),
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
