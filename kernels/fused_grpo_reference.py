"""The plain-torch specification of `fused_grpo.fused_grpo_loss`: `spice.grpo.grpo_loss_reference`."""

from __future__ import annotations

from spice.grpo import grpo_loss_reference

fused_grpo_loss_reference = grpo_loss_reference

__all__ = ["fused_grpo_loss_reference"]
