"""Atomic checkpoints of a run: model (safetensors), optimizer, RNG states and loop state.

A checkpoint is written into a temporary folder and renamed into place, then `latest` is replaced
atomically, so a process killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from spice.train.base import TrainBackend


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, iteration: int, backend: TrainBackend, loop_state: dict,
                    keep: int = 2, rank: int = 0, world: int = 1) -> Path:
    """Write checkpoint `step_<iteration>` (`iteration` iterations done) and point `latest` at it.
    Every rank calls it (a sharded backend writes its part); rank 0 moves it into place."""
    root = run_dir / "checkpoints"
    final = root / f"step_{iteration:06d}"
    tmp = root / f".step_{iteration:06d}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier(world)
    backend.save_checkpoint(tmp)
    _barrier(world)
    if rank != 0:
        _barrier(world)
        return final
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "loop_state.json").write_text(json.dumps(loop_state, indent=1))
    for file in tmp.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(root)
    write_text_atomic(root / "latest", final.name)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    _barrier(world)
    return final


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    if not (path / "loop_state.json").is_file():
        raise RuntimeError(f"{pointer} points at {path}, which is not a complete checkpoint")
    return path


def load_checkpoint(path: Path, backend: TrainBackend) -> dict:
    """Restore model, optimizer and RNG state; return the loop state."""
    backend.load_checkpoint(path)
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return json.loads((path / "loop_state.json").read_text())
