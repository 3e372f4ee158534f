"""`spice bench guard`: what the guard adds to an iteration at the paper's scale (128 documents x 4
attempts, G = 8): chaining the task rows, near-duplicate search, the rules, and what `spice audit`
takes per row and per checkpoint gigabyte."""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from spice.config import default_guard_rules
from spice.guard import monitors, policy
from spice.guard.records import append_rows, file_sha256, verify_file


def _task_rows(iteration: int, count: int, samples: int, rng: random.Random) -> list[dict]:
    words = "river prize chemistry energy glucose country century physics oxygen water light sea".split()
    rows = []
    for attempt in range(count):
        question = " ".join(rng.choice(words) for _ in range(18)) + "?"
        rows.append({"iteration": iteration, "document_id": f"{rng.getrandbits(64):016x}", "attempt": attempt,
                     "status": "valid", "question": question, "answer": "A", "kind": "mcq",
                     "options": [rng.choice(words) for _ in range(4)], "quote": question[:80],
                     "reasoner": [{"answer": "A", "reward": 1.0, "response": " ".join(rng.choice(words)
                                                                                     for _ in range(80))}
                                  for _ in range(samples)]})
    return rows


def _timed(fn, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--documents", type=int, default=128)
    parser.add_argument("--attempts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=4, help="iterations of rows written")
    parser.add_argument("--checkpoint-mb", type=int, default=256, help="size of the file hashed")


def run(args: argparse.Namespace) -> int:
    rng = random.Random(0)
    count = args.documents * args.attempts
    rules = policy.parse_rules(default_guard_rules())
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        append_times, dup_times, recent = [], [], []
        for iteration in range(args.iterations):
            rows = _task_rows(iteration, count, args.samples, rng)
            seconds, _ = _timed(append_rows, run_dir, "tasks.jsonl", rows, b"key")
            append_times.append(seconds)
            questions = [r["question"] for r in rows[::args.attempts]]
            seconds, _ = _timed(monitors.duplicate_rate, questions, recent)
            dup_times.append(seconds)
            recent = (recent + questions)[-3 * len(questions):]
        history = [{"challenger_reward_mean": rng.random(), "grad_norm": rng.random()} for _ in range(20)]
        rules_seconds, _ = _timed(policy.evaluate, rules, history[-1], history[:-1])
        size = (run_dir / "tasks.jsonl").stat().st_size
        audit_seconds, (rows_checked, _, problem) = _timed(verify_file, run_dir / "tasks.jsonl", b"key")
        assert problem is None, problem
        blob = run_dir / "weights.bin"
        with open(blob, "wb") as handle:
            for _ in range(args.checkpoint_mb):
                handle.write(rng.randbytes(1 << 20))
        hash_seconds, _ = _timed(file_sha256, blob)
    print(f"task rows per iteration: {count} ({size / args.iterations / 1e6:.1f} MB), signed")
    print(f"chain + sign + fsync the rows: {1000 * min(append_times):.1f} ms (best of {args.iterations})")
    print(f"near-duplicates of {args.documents} questions against up to {3 * args.documents} recent: "
          f"{1000 * min(dup_times[1:] or dup_times):.1f} ms")
    print(f"{len(rules)} default rules: {1000 * rules_seconds:.2f} ms")
    print(f"audit: {rows_checked / audit_seconds:,.0f} rows/s ({size / audit_seconds / 1e6:.0f} MB/s)")
    print(f"checkpoint hashing: {args.checkpoint_mb / hash_seconds:,.0f} MB/s")
    return 0
