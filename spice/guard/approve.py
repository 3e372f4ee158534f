"""`spice approve RUN_DIR --by NAME`: a person's approval, recorded. Without --step it lets a paused run
continue (RUN_DIR/APPROVE); with --step it approves that checkpoint for `spice promote`, naming its
content hash (signed with $SPICE_AUDIT_KEY when set)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from spice.guard.provenance import checkpoint_files, digest_of
from spice.guard.records import append_rows, audit_key
from spice.guard.rollback import verify_checkpoint


def checkpoint_name(step: str) -> str:
    """`7`, `step_7` or `step_000007` -> `step_000007`."""
    text = step[len("step_"):] if step.startswith("step_") else step
    if not text.isdigit():
        raise ValueError(f"--step {step!r}: expected a number or step_N")
    return f"step_{int(text):06d}"


def approve_checkpoint(run_dir: Path, name: str, by: str, note: str = "") -> dict:
    """Record an approval of checkpoint `name` (its current content hash) in events.jsonl."""
    path = run_dir / "checkpoints" / name
    if not (path / "loop_state.json").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint")
    problem = verify_checkpoint(run_dir, path)
    if problem is not None:
        raise ValueError(problem)
    event = {"event": "approval", "scope": "promotion", "checkpoint": name,
             "checkpoint_sha256": digest_of(checkpoint_files(path)), "by": by, "note": note, "time": time.time()}
    append_rows(run_dir, "events.jsonl", [event], audit_key())
    return event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--by", required=True, help="who approves (recorded)")
    parser.add_argument("--step", help="approve this checkpoint for promotion (N or step_N); without it, "
                                       "let a paused run continue")
    parser.add_argument("--note", default="", help="why (recorded)")


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        print(f"spice approve: {run_dir} is not a run folder (no config.yaml)", file=sys.stderr)
        return 2
    if args.step is None:
        (run_dir / "APPROVE").write_text(json.dumps({"by": args.by, "note": args.note, "time": time.time()}))
        print(f"spice approve: wrote {run_dir / 'APPROVE'}; a paused run continues and records it")
        return 0
    try:
        event = approve_checkpoint(run_dir, checkpoint_name(args.step), args.by, args.note)
    except (ValueError, FileNotFoundError) as error:
        print(f"spice approve: refused: {error}", file=sys.stderr)
        return 2
    signed = "signed" if audit_key() else "unsigned (no $SPICE_AUDIT_KEY)"
    print(f"spice approve: {event['checkpoint']} (sha256 {event['checkpoint_sha256'][:16]}) approved by "
          f"{args.by}, {signed}")
    return 0
