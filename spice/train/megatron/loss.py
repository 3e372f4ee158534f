"""The GRPO loss of one micro-batch on the last pipeline stage, through the vocab-parallel path.

Mirrors `spice.train.torch_backend` token for token: position t-1's hidden state predicts token t,
only masked tokens are scored, and the denominator is the global one from `loss_normalizer`, so the
two backends give the same loss and gradients for any split into micro-batches and ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spice.config import LossConfig
from spice.grpo import grpo_loss


@dataclass
class MicroBatch:
    """One micro-batch as the Megatron schedule consumes it (every tensor [B, T] on the device)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    loss_mask: torch.Tensor
    advantages: torch.Tensor
    rollout_logprobs: torch.Tensor
    rows: torch.Tensor  # [B] index of each row in the global batch, -1 for padding rows


def score(hidden: torch.Tensor, weight: torch.Tensor, micro: MicroBatch, loss_cfg: LossConfig,
          normalizer: float, tp_group: object | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logprobs [B, T]) of a micro-batch from hidden states [B, T, H] and this rank's vocab
    shard of the output weight; logprobs are 0 off the loss mask (and at position 0)."""
    mask = micro.loss_mask[:, 1:]
    keep = mask.reshape(-1) > 0
    rows = mask.shape[0]
    sequence_ids = torch.arange(rows, device=mask.device).unsqueeze(1).expand_as(mask).reshape(-1)[keep]
    flat_hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])[keep]
    targets = micro.input_ids[:, 1:].reshape(-1)[keep]
    advantages = micro.advantages[:, 1:].reshape(-1)[keep].float()
    loss, logp = grpo_loss(
        flat_hidden, weight, targets, advantages, torch.ones_like(advantages),
        implementation=loss_cfg.implementation,
        rollout_logprobs=micro.rollout_logprobs[:, 1:].reshape(-1)[keep],
        tis_cap=loss_cfg.tis_cap, clip_low=loss_cfg.clip_low, clip_high=loss_cfg.clip_high,
        aggregation=loss_cfg.aggregation, normalizer=normalizer, sequence_ids=sequence_ids,
        process_group=tp_group,
    )
    dense = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    dense.reshape(-1)[keep] = logp.detach().float()
    return loss, torch.nn.functional.pad(dense, (1, 0))
