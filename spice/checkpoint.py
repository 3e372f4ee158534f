"""Atomic checkpoints of a run: model (safetensors), optimizer, RNG states and loop state.

A checkpoint is written into a temporary folder and renamed into place, then `latest` is replaced
atomically, so a process killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

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


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """The RNG states as JSON (python, numpy) and tensors (torch, cuda): nothing that needs pickle."""
    version, words, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    plain = {"python": [version, list(words), gauss],
             "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)]}
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return plain, tensors


def set_rng_state(plain: dict, tensors: dict[str, torch.Tensor]) -> None:
    version, words, gauss = plain["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, position, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda{i}"] for i in range(len(tensors)) if f"cuda{i}" in tensors]
    if torch.cuda.is_available() and cuda:
        torch.cuda.set_rng_state_all(cuda)


def load_tensors_safely(path: Path, map_location: str | torch.device = "cpu"):
    """`torch.load` with weights_only=True: tensors and plain containers only, so a tampered file cannot
    run code; a refused file is named."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(f"{path}: refused to load: it holds more than tensors and plain containers "
                           f"({first})") from None


def save_checkpoint(run_dir: Path, iteration: int, backend: TrainBackend, loop_state: dict,
                    keep: int = 2, rank: int = 0, world: int = 1, protect: tuple[str, ...] = ()) -> Path:
    """Write checkpoint `step_<iteration>` (`iteration` iterations done) and point `latest` at it.
    Every rank calls it (a sharded backend writes its part); rank 0 moves it into place. Checkpoints
    named in `protect` (the guard's last one that passed every rule) outlive `keep`."""
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
    plain, tensors = rng_state()
    (tmp / "rng.json").write_text(json.dumps(plain))
    save_file(tensors, str(tmp / "rng.safetensors"))
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
        if old.name not in protect:
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
    """Restore model, optimizer and RNG state; return the loop state. Nothing is unpickled."""
    backend.load_checkpoint(path)
    if not (path / "rng.json").is_file():
        raise RuntimeError(f"{path}: no rng.json (a checkpoint from a version that pickled its RNG state; "
                           "it is not loaded, since unpickling can run code)")
    set_rng_state(json.loads((path / "rng.json").read_text()), load_file(str(path / "rng.safetensors")))
    return json.loads((path / "loop_state.json").read_text())
