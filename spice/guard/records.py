"""Tamper-evident run records: every row of a run's jsonl files carries a hash chain link, optionally
signed with an HMAC key from $SPICE_AUDIT_KEY, and `guard/head.json` anchors the end of every chain.

A row is written as its JSON body with one more key, `chain` = {n, prev, hash[, hmac]}, where
hash = sha256(prev + "\\n" + n + "\\n" + body) and body is the row's JSON without `chain` (json.dumps,
ensure_ascii=False, the same text telemetry writes). Changing a byte breaks the row's hash; dropping or
reordering rows breaks `n` and `prev`; dropping the last rows disagrees with the head.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

CHAIN_KEY = "chain"
GENESIS = "0" * 64
KEY_ENV = "SPICE_AUDIT_KEY"
HEAD = Path("guard") / "head.json"
# the chained files of a run folder, in the order the audit reads them
CHAINED_FILES = ("tasks.jsonl", "metrics.jsonl", "manifests.jsonl", "documents.jsonl", "events.jsonl")


def audit_key() -> bytes | None:
    """The signing key from $SPICE_AUDIT_KEY, or None (rows are then chained but not signed)."""
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else None


def link_hash(prev: str, n: int, body: str) -> str:
    return hashlib.sha256(f"{prev}\n{n}\n{body}".encode()).hexdigest()


def sign(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def body_of(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False)


def content_hash(row: dict) -> str:
    """sha256 of a row's JSON without its chain link: what a manifest lists for each task row."""
    body = {k: v for k, v in row.items() if k != CHAIN_KEY}
    return hashlib.sha256(body_of(body).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def locked(run_dir: Path):
    """One writer at a time across processes (the run, `spice approve`, `spice rollback`)."""
    (run_dir / "guard").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "guard" / "records.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _last_line(path: Path) -> tuple[bytes, int]:
    """The last newline-terminated line of `path` and the size up to its end (bytes after it are an
    unterminated row of a killed write)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        end, block, data = size, 1 << 16, b""
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            data = handle.read(end - start) + data
            end = start
            if data.count(b"\n") >= 2 or (end == 0 and b"\n" in data):
                break
    terminated = data[: data.rfind(b"\n") + 1] if b"\n" in data else b""
    complete = size - (len(data) - len(terminated))
    lines = terminated.splitlines()
    return (lines[-1] if lines else b""), complete


def chain_tail(path: Path) -> tuple[int, str, int]:
    """(rows so far, hash of the last row, bytes of complete rows) of a chained file."""
    if not path.exists() or path.stat().st_size == 0:
        return 0, GENESIS, 0
    line, complete = _last_line(path)
    if not line:
        return 0, GENESIS, complete
    link = json.loads(line)[CHAIN_KEY]
    return link["n"] + 1, link["hash"], complete


def _write_head(run_dir: Path, name: str, rows: int, digest: str, key: bytes | None) -> None:
    path = run_dir / HEAD
    head = json.loads(path.read_text()) if path.is_file() else {"files": {}}
    head["files"][name] = {"rows": rows, "hash": digest}
    head.pop("hmac", None)
    if key is not None:
        head["hmac"] = sign(key, json.dumps(head["files"], sort_keys=True))
    tmp = path.with_name("head.json.tmp")
    tmp.write_text(json.dumps(head, indent=1, sort_keys=True))
    os.replace(tmp, path)


def append_rows(run_dir: Path, name: str, rows: list[dict], key: bytes | None = None) -> list[dict]:
    """Append `rows` to run_dir/name with their chain links, durable before returning; returns the links.
    An unterminated last line (a write killed midway) is dropped first, with a warning."""
    path = run_dir / name
    links = []
    with locked(run_dir):
        n, prev, complete = chain_tail(path)
        if path.exists() and path.stat().st_size > complete:
            print(f"spice guard: {path}: dropping {path.stat().st_size - complete} bytes of an unterminated "
                  "row (a write that was killed)", file=sys.stderr)
            with open(path, "r+b") as handle:
                handle.truncate(complete)
        with open(path, "a", encoding="utf-8") as handle:
            for row in rows:
                if CHAIN_KEY in row:
                    raise ValueError(f"{name}: a row may not carry its own {CHAIN_KEY!r} key")
                body = body_of(row)
                digest = link_hash(prev, n, body)
                link = {"n": n, "prev": prev, "hash": digest}
                if key is not None:
                    link["hmac"] = sign(key, digest)
                separator = ", " if body != "{}" else ""
                handle.write(f"{body[:-1]}{separator}\"{CHAIN_KEY}\": {json.dumps(link)}}}\n")
                links.append(link)
                n, prev = n + 1, digest
            handle.flush()
            os.fsync(handle.fileno())
        _write_head(run_dir, name, n, prev, key)
    return links


def reanchor(run_dir: Path, names: tuple[str, ...] = CHAINED_FILES, key: bytes | None = None) -> None:
    """Point the head at the current end of each file (after resume truncates to a checkpoint)."""
    with locked(run_dir):
        for name in names:
            rows, digest, _ = chain_tail(run_dir / name)
            _write_head(run_dir, name, rows, digest, key)


def read_rows(path: Path) -> list[dict]:
    """The complete rows of a chained (or plain) jsonl file; an unterminated last line is skipped."""
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n") and line.strip():
                rows.append(json.loads(line))
    return rows


def count_rows(path: Path, size: int) -> int:
    """Complete rows in the first `size` bytes of `path` (a checkpoint records sizes, rollback rows)."""
    if not path.is_file():
        return 0
    count, left = 0, size
    with open(path, "rb") as handle:
        while left > 0:
            block = handle.read(min(left, 1 << 20))
            if not block:
                break
            count, left = count + block.count(b"\n"), left - len(block)
    return count


def verify_file(path: Path, key: bytes | None, on_row=None) -> tuple[int, str, str | None]:
    """Check one chained file, streaming: (rows, last hash, first problem or None). The problem names
    the file and the row (1-based line). `on_row(n, row)` sees each verified row (without its link)."""
    name = path.name
    prev, n = GENESIS, 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return n, prev, f"{name} row {number}: not valid UTF-8 ({error.reason} at byte {error.start})"
            problem = _verify_line(name, number, line, n, prev, key)
            if isinstance(problem, str):
                return n, prev, problem
            digest, row = problem
            if on_row is not None:
                on_row(n, row)
            prev, n = digest, n + 1
    return n, prev, None


def _verify_line(name: str, number: int, line: str, n: int, prev: str, key: bytes | None) -> str | tuple[str, dict]:
    """The row's hash and content (without its link), or the problem with it."""
    where = f"{name} row {number}"
    if not line.endswith("\n"):
        return f"{where}: unterminated last row"
    try:
        row = json.loads(line)
        link = row.pop(CHAIN_KEY)
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
        return f"{where}: not a JSON object with a {CHAIN_KEY!r} link"
    if not isinstance(link, dict) or link.get("n") != n:
        found = link.get("n") if isinstance(link, dict) else link
        return f"{where}: row number {found!r}, expected {n} (a row was dropped, added or moved)"
    if link.get("prev") != prev:
        return f"{where}: does not follow the row before it (a row was dropped or changed)"
    digest = link_hash(prev, n, body_of(row))
    if link.get("hash") != digest:
        return f"{where}: content does not match its hash (the row was changed)"
    if key is not None and not hmac.compare_digest(str(link.get("hmac", "")), sign(key, digest)):
        return f"{where}: signature does not verify with $SPICE_AUDIT_KEY"
    if key is None and "hmac" in link:
        return f"{where}: the row is signed; set $SPICE_AUDIT_KEY to verify it"
    return digest, row


def superseded(run_dir: Path) -> dict[str, list[tuple[int, int]]]:
    """Row ranges [start, end) of each file that a rollback superseded (from events.jsonl)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for event in read_rows(run_dir / "events.jsonl"):
        if event.get("event") == "rollback":
            for name, (start, end) in event.get("superseded", {}).items():
                ranges.setdefault(name, []).append((start, end))
    return ranges


def is_superseded(ranges: dict[str, list[tuple[int, int]]], name: str, n: int) -> bool:
    return any(start <= n < end for start, end in ranges.get(name, ()))


def current_rows(run_dir: Path, name: str) -> list[dict]:
    """The rows of a chained file that no rollback superseded."""
    ranges = superseded(run_dir)
    return [r for r in read_rows(run_dir / name) if not is_superseded(ranges, name, r[CHAIN_KEY]["n"])]
