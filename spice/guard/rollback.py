"""Rollback: make an earlier checkpoint the run's `latest` without losing a row. The rows written after
it stay in the records, marked superseded by a `rollback` event (the chain forbids editing rows), and
the checkpoint's loop state is rewritten to the current record sizes so that a resume keeps them.

`spice rollback RUN_DIR --to step_N` does by hand what a `rollback` rule does during training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spice.checkpoint import write_text_atomic
from spice.guard.provenance import checkpoint_files, digest_of
from spice.guard.records import append_rows, audit_key, count_rows, read_rows

SIZES = {"tasks.jsonl": "tasks_bytes", "metrics.jsonl": "metrics_bytes", "manifests.jsonl": "manifests_bytes"}


def record_checkpoint(run_dir: Path, path: Path, key: bytes | None, note: str | None = None) -> dict:
    """A `checkpoint` event with the hash of every file of `path`; returns it."""
    import time

    files = checkpoint_files(path)
    state = json.loads((path / "loop_state.json").read_text())
    event = {"event": "checkpoint", "checkpoint": path.name, "next_iteration": state["next_iteration"],
             "clean": bool(state.get("guard_clean", True)), "sha256": digest_of(files), "files": files,
             "time": time.time(), **({"note": note} if note else {})}
    append_rows(run_dir, "events.jsonl", [event], key)
    return event


def checkpoint_events(run_dir: Path, abandoned_too: bool = False) -> dict[str, dict]:
    """The latest `checkpoint` event of each checkpoint (that no rollback abandoned since, unless
    `abandoned_too`: the audit checks the files of those as well)."""
    latest: dict[str, dict] = {}
    for event in read_rows(run_dir / "events.jsonl"):
        if event.get("event") == "checkpoint":
            latest[event["checkpoint"]] = event
        elif event.get("event") == "rollback" and not abandoned_too:
            for name in event.get("abandoned", []):
                latest.pop(name, None)
    return latest


def clean_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoints on disk that passed every rule, oldest first."""
    events = checkpoint_events(run_dir)
    names = [n for n, e in events.items() if e["clean"] and (run_dir / "checkpoints" / n / "loop_state.json").is_file()]
    return sorted(names, key=lambda n: events[n]["next_iteration"])


def verify_checkpoint(run_dir: Path, path: Path) -> str | None:
    """The first problem with a checkpoint's files against its recorded hashes, or None."""
    recorded = checkpoint_events(run_dir, abandoned_too=True).get(path.name)
    if recorded is None:
        return f"checkpoints/{path.name}: no recorded hash in events.jsonl"
    files = checkpoint_files(path)
    for name, digest in recorded["files"].items():
        if name not in files:
            return f"checkpoints/{path.name}/{name}: missing"
        if files[name] != digest:
            return f"checkpoints/{path.name}/{name}: content does not match its recorded hash"
    extra = sorted(set(files) - set(recorded["files"]))
    if extra:
        return f"checkpoints/{path.name}/{extra[0]}: not part of the recorded checkpoint"
    return None


def mark_rollback(run_dir: Path, target: Path, weight_version: int, rollbacks: int, reasons: list[str],
                  by: str, key: bytes | None) -> dict:
    """Supersede the rows after `target`, rewrite its loop state to the current sizes, point `latest` at
    it and record its new hash; returns the rollback event."""
    import time

    state = json.loads((target / "loop_state.json").read_text())
    superseded, sizes = {}, {}
    for name, size_key in SIZES.items():
        path = run_dir / name
        size = path.stat().st_size if path.exists() else 0
        start, end = count_rows(path, state.get(size_key, 0)), count_rows(path, size)
        if end > start:
            superseded[name] = [start, end]
        sizes[size_key] = size
    events = checkpoint_events(run_dir)
    abandoned = sorted(n for n, e in events.items() if e["next_iteration"] > state["next_iteration"])
    event = {"event": "rollback", "to": target.name, "next_iteration": state["next_iteration"],
             "superseded": superseded, "abandoned": abandoned, "reasons": reasons, "by": by,
             "rollbacks": rollbacks, "time": time.time()}
    append_rows(run_dir, "events.jsonl", [event], key)
    state.update(sizes, weight_version=weight_version, guard_rollbacks=rollbacks, guard_clean=True)
    write_text_atomic(target / "loop_state.json", json.dumps(state, indent=1))
    record_checkpoint(run_dir, target, key)
    write_text_atomic(run_dir / "checkpoints" / "latest", target.name)
    print(f"spice guard: rolled back to {target.name} (iteration {state['next_iteration']}); superseded rows: "
          + (", ".join(f"{n} {a + 1}-{b}" for n, (a, b) in superseded.items()) or "none"), file=sys.stderr,
          flush=True)
    return event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (not being trained right now)")
    parser.add_argument("--to", required=True, metavar="step_N", help="the checkpoint to return to, e.g. step_000004")
    parser.add_argument("--by", default="unknown", help="who rolls back (recorded)")
    parser.add_argument("--reason", default="by hand", help="why (recorded)")


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    name = args.to if args.to.startswith("step_") else f"step_{int(args.to):06d}"
    target = run_dir / "checkpoints" / name
    if not (target / "loop_state.json").is_file():
        print(f"spice rollback: {target} is not a checkpoint", file=sys.stderr)
        return 2
    problem = verify_checkpoint(run_dir, target)
    if problem is not None:
        print(f"spice rollback: refused: {problem}", file=sys.stderr)
        return 2
    states = [json.loads(p.read_text()) for p in (run_dir / "checkpoints").glob("step_*/loop_state.json")]
    version = max(s["weight_version"] for s in states) + 1
    rollbacks = max(s.get("guard_rollbacks", 0) for s in states) + 1
    mark_rollback(run_dir, target, version, rollbacks, [args.reason], by=args.by, key=audit_key())
    print(f"spice rollback: {run_dir} now continues from {name}; resume with `spice train --resume {run_dir}`")
    return 0
