"""`spice audit RUN_DIR`: verify a run's records and checkpoints. Every chained file row by row (hash
chain, and HMAC signatures with $SPICE_AUDIT_KEY), the head that anchors each chain's end, every
manifest against the task rows it lists, and every checkpoint's files against their recorded hashes.
Prints the first broken file and row, exit 1; or one line of what was verified, exit 0."""

from __future__ import annotations

import argparse
import hmac
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from spice.guard.records import (
    CHAIN_KEY,
    CHAINED_FILES,
    HEAD,
    audit_key,
    content_hash,
    read_rows,
    sign,
    verify_file,
)
from spice.guard.rollback import verify_checkpoint


@dataclass
class AuditResult:
    problem: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    signed: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem:
            return f"FAILED: {self.problem}"
        files = ", ".join(f"{name} {rows} rows" for name, rows in self.rows.items())
        return (f"OK: {files}; {self.checkpoints} checkpoint(s) match their hashes; "
                + ("signatures verified" if self.signed else "unsigned (no $SPICE_AUDIT_KEY)"))


def _check_head(run_dir: Path, tails: dict[str, tuple[int, str]], key: bytes | None) -> str | None:
    path = run_dir / HEAD
    if not path.is_file():
        return f"{HEAD}: missing (it anchors the end of every record file)" if tails else None
    try:
        head = json.loads(path.read_text())
        files = head["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"{HEAD}: not a valid head record"
    if key is not None and not hmac.compare_digest(str(head.get("hmac", "")),
                                                   sign(key, json.dumps(files, sort_keys=True))):
        return f"{HEAD}: signature does not verify with $SPICE_AUDIT_KEY"
    if key is None and "hmac" in head:
        return f"{HEAD}: the head is signed; set $SPICE_AUDIT_KEY to verify it"
    for name in CHAINED_FILES:
        rows, digest = tails.get(name, (0, None))
        recorded = files.get(name)
        if recorded is None:
            if rows:
                return f"{name}: not anchored in {HEAD}"
            continue
        if rows < recorded["rows"]:
            return f"{name} row {rows + 1}: missing (the file ends after {rows} rows; {HEAD} records " \
                   f"{recorded['rows']})"
        if rows > recorded["rows"] or recorded["hash"] != digest:
            return f"{name} row {recorded['rows'] + 1 if rows > recorded['rows'] else rows}: the file does not " \
                   f"end where {HEAD} records"
    return None


def _check_manifests(run_dir: Path, task_hashes: dict[int, str]) -> str | None:
    for number, manifest in enumerate(read_rows(run_dir / "manifests.jsonl"), start=1):
        first = manifest.get("tasks", {}).get("first_row")
        for offset, digest in enumerate(manifest.get("tasks", {}).get("sha256", [])):
            found = task_hashes.get(first + offset)
            if found is None:
                return f"manifests.jsonl row {number}: lists tasks.jsonl row {first + offset + 1}, which is missing"
            if found != digest:
                return f"tasks.jsonl row {first + offset + 1}: does not match the hash in manifests.jsonl row {number}"
    return None


def _check_config(run_dir: Path) -> str | None:
    """config.yaml must be the one the last start or resume recorded (a resume may change it)."""
    from spice.guard.provenance import config_sha256

    starts = [e for e in read_rows(run_dir / "events.jsonl") if e.get("event") in ("start", "resume")]
    if starts and starts[-1].get("config_sha256") != config_sha256(run_dir):
        return f"config.yaml: does not match the hash recorded when the run last started (events.jsonl row " \
               f"{starts[-1][CHAIN_KEY]['n'] + 1})"
    return None


def audit(run_dir: Path, key: bytes | None = None) -> AuditResult:
    """Verify everything in `run_dir`; the result names the first problem."""
    result = AuditResult(signed=key is not None)
    if not (run_dir / "config.yaml").is_file():
        result.problem = f"{run_dir}: not a run folder (no config.yaml)"
        return result
    tails, task_hashes = {}, {}

    def remember(n: int, row: dict) -> None:
        task_hashes[n] = content_hash(row)

    for name in CHAINED_FILES:
        path = run_dir / name
        if not path.exists():
            continue
        rows, last, problem = verify_file(path, key, remember if name == "tasks.jsonl" else None)
        if problem:
            result.problem = problem
            return result
        tails[name] = (rows, last)
        result.rows[name] = rows
    result.problem = _check_head(run_dir, tails, key) or _check_manifests(run_dir, task_hashes) or _check_config(run_dir)
    if result.problem:
        return result
    root = run_dir / "checkpoints"
    for path in sorted(p for p in root.glob("step_*") if p.is_dir()) if root.is_dir() else []:
        problem = verify_checkpoint(run_dir, path)
        if problem:
            result.problem = problem
            return result
        result.checkpoints += 1
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder to verify")


def run(args: argparse.Namespace) -> int:
    result = audit(Path(args.run_dir), audit_key())
    print(f"spice audit {args.run_dir}: {result.summary()}", file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1
