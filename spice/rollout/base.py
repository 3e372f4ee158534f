"""The rollout seam: what every engine (in-process transformers, SGLang servers) provides."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to sample; the names follow SGLang's `sampling_params` where they overlap."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    json_schema: str | None = None  # constrain the output to this JSON schema (a JSON string)
    seed: int | None = None


@dataclass
class Completion:
    """One sampled continuation of one prompt."""

    prompt_index: int  # which prompt of the request it continues
    text: str
    token_ids: list[int]
    logprobs: list[float]  # log-probability of each sampled token under the serving weights
    finish_reason: str  # "stop" (EOS) or "length" (hit max_new_tokens)
    weight_version: int  # version of the weights that produced it


@runtime_checkable
class RolloutEngine(Protocol):
    """Generates completions for token-id prompts and receives new weights in place."""

    weight_version: int

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[Completion]]:
        """Return `sampling.n` completions for every prompt, in prompt order."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> dict:
        """Load HF-named tensors (full, unsharded) as the new weights; return sync metrics
        (`seconds`, `gigabytes`)."""
        ...

    def close(self) -> None:
        """Release servers, processes and memory."""
        ...
