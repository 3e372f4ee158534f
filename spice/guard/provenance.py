"""Provenance of a run: the code, config and corpus it used, and content hashes of checkpoints; what
each iteration's manifest and `spice audit` rely on."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache
from pathlib import Path

import spice
from spice.guard.records import file_sha256


@cache
def code_version() -> dict:
    """The package version and, in a git checkout, the commit and whether the tree had changes."""
    root = Path(spice.__file__).resolve().parents[1]
    version = {"package": getattr(spice, "__version__", "unknown")}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            version.update(commit=commit.stdout.strip(), dirty=bool(status.stdout.strip()))
    except (OSError, subprocess.TimeoutExpired):  # no git: the package version alone
        pass
    return version


def config_sha256(run_dir: Path) -> str | None:
    path = run_dir / "config.yaml"
    return file_sha256(path) if path.is_file() else None


def corpus_sha256(path: Path, limit_bytes: int = 1 << 32) -> str | None:
    """Content hash of a corpus file or folder (files in name order); None past `limit_bytes`."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    if not files or sum(f.stat().st_size for f in files) > limit_bytes:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}\n{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def checkpoint_files(path: Path) -> dict[str, str]:
    """sha256 of every file of a checkpoint folder, by relative path."""
    return {str(f.relative_to(path)): file_sha256(f) for f in sorted(path.rglob("*")) if f.is_file()}


def digest_of(files: dict[str, str]) -> str:
    """One hash for a checkpoint: what an approval names."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
