"""Triton kernels of spice, each beside its plain-torch reference; importable as `spice.kernels`.

Kernels load lazily so that `import spice.kernels` does not import triton; set TRITON_INTERPRET=1
before the first kernel is touched to run them on CPU tensors in triton's interpreter.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fused_grpo_loss", "fused_grpo_loss_reference"]


def __getattr__(name: str) -> Any:
    if name == "fused_grpo_loss":
        from .fused_grpo import fused_grpo_loss

        return fused_grpo_loss
    if name == "fused_grpo_loss_reference":
        from .fused_grpo_reference import fused_grpo_loss_reference

        return fused_grpo_loss_reference
    raise AttributeError(f"module 'spice.kernels' has no attribute {name!r}")
