"""Make megatron-core run on a machine without CUDA (tests and CI on CPU with gloo).

megatron-core assumes a CUDA device in a handful of places that matter for a CPU run: it asks
`torch.cuda.current_device()` for tensor placement, forks the CUDA RNG tracker around dropout and
initialisation, saves and restores the CUDA RNG state around activation recomputation, calls `torch.cuda.synchronize()` around pipeline sends, moves the shared
embedding to `.cuda()` when pipeline stages tie it, and allocates token counters with
`device="cuda"` in its pipeline schedules. `apply()` redirects exactly these to the CPU. It does
nothing when a CUDA device is present, so GPU runs use megatron-core unmodified.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

import torch

_applied = False


def needed() -> bool:
    """True when there is no CUDA device, so megatron-core needs the shims."""
    return not torch.cuda.is_available()


class _CpuTorch(types.ModuleType):
    """`torch` as seen by megatron's schedules: tensors asked for on "cuda" are made on the CPU."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def zeros(*args: Any, **kwargs: Any) -> torch.Tensor:
        if str(kwargs.get("device", "cpu")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return torch.zeros(*args, **kwargs)


def _tensor_cuda(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return self


def apply() -> bool:
    """Install the CPU redirections once, only when no CUDA device exists; True if installed."""
    global _applied
    if _applied:
        return True
    if not needed():
        return False
    from megatron.core.pipeline_parallel import schedules
    from megatron.core.tensor_parallel import random as tp_random

    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *args, **kwargs: None
    tp_random._get_cuda_rng_state = lambda *args, **kwargs: torch.empty(0, dtype=torch.uint8)
    tp_random._set_cuda_rng_state = lambda *args, **kwargs: None
    torch.Tensor.cuda = _tensor_cuda
    tp_random.CudaRNGStatesTracker.fork = lambda self, name=None: contextlib.nullcontext()
    tp_random.CudaRNGStatesTracker.add = lambda self, name, seed: None
    schedules.torch = _CpuTorch()
    _applied = True
    return True
