"""The training seam: what every backend (plain torch/DDP, Megatron-Core) provides."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Batch:
    """Sequences of both roles, right-padded to one length T.

    Position t of `loss_mask`, `advantages` and `rollout_logprobs` describes token `input_ids[:, t]`
    (the token being predicted); backends shift hidden states by one to score it.
    """

    input_ids: torch.Tensor  # [S, T] int64, prompt + completion, right-padded
    attention_mask: torch.Tensor  # [S, T] 1 on real tokens
    loss_mask: torch.Tensor  # [S, T] 1 on completion tokens that the loss trains
    advantages: torch.Tensor  # [S, T] float32, per-token advantage (0 off the mask)
    rollout_logprobs: torch.Tensor  # [S, T] float32, logprobs from the rollout engine (0 off the mask)
    roles: list[str] = field(default_factory=list)  # "challenger" | "reasoner", one per sequence
    # per sequence: rollout_logprobs are of a grammar-masked distribution (SGLang under json_schema);
    # `loop.update_policy` replaces them by the trainer's before the step. Empty: none is.
    masked_logprobs: list[bool] = field(default_factory=list)

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, rows: slice | list[int]) -> Batch:
        """A sub-batch of the given sequences (for micro-batching and data parallelism)."""
        roles = self.roles[rows] if isinstance(rows, slice) else [self.roles[i] for i in rows]
        masked = self.masked_logprobs[rows] if isinstance(rows, slice) else \
            [self.masked_logprobs[i] for i in rows if i < len(self.masked_logprobs)]
        return Batch(
            input_ids=self.input_ids[rows],
            attention_mask=self.attention_mask[rows],
            loss_mask=self.loss_mask[rows],
            advantages=self.advantages[rows],
            rollout_logprobs=self.rollout_logprobs[rows],
            roles=roles,
            masked_logprobs=masked,
        )


@runtime_checkable
class TrainBackend(Protocol):
    """Holds the policy being trained."""

    def logprobs(self, batch: Batch) -> torch.Tensor:
        """Per-token log-probabilities [S, T] of `batch.input_ids` under the current weights
        (0 where `loss_mask` is 0). No gradient."""
        ...

    def step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on the GRPO loss over the whole batch (micro-batched inside);
        returns metrics such as `loss`, `grad_norm`, `tokens_per_second`."""
        ...

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full (gathered) weights under Hugging Face names, for weight sync and HF export."""
        ...

    def save_checkpoint(self, path: str) -> None:
        """Write model (safetensors), optimizer and RNG state under `path`."""
        ...

    def load_checkpoint(self, path: str) -> None:
        """Restore what `save_checkpoint` wrote."""
        ...
