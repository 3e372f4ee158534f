"""The rollout seam: what every engine (in-process transformers, SGLang servers) provides."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
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
    regex: str | None = None  # or to this regular expression (xgrammar's dialect); at most one of the two
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.json_schema is not None and self.regex is not None:
            raise ValueError("SamplingParams: json_schema and regex are exclusive (SGLang refuses both at once)")

    @property
    def grammar(self) -> tuple[str, str] | None:
        """(SGLang's parameter name, its value) of the grammar that masks the sampled distribution, or None."""
        if self.json_schema is not None:
            return "json_schema", self.json_schema
        return None if self.regex is None else ("regex", self.regex)


GRAMMAR_KEYS = ("json_schema", "regex")  # the grammar parameters of SGLang's sampling_params that spice sends


@dataclass
class Completion:
    """One sampled continuation of one prompt."""

    prompt_index: int  # which prompt of the request it continues
    text: str
    token_ids: list[int]
    logprobs: list[float]  # log-probability of each sampled token under the serving weights
    finish_reason: str  # "stop" (EOS) or "length" (hit max_new_tokens)
    weight_version: int  # version of the weights that produced it
    # True when `logprobs` are of the grammar-masked distribution (SGLang under json_schema/regex), not the
    # policy's: the trainer recomputes them before the update (loop.update_policy).
    masked_logprobs: bool = False


def per_prompt(sampling: SamplingParams | Sequence[SamplingParams], count: int) -> list[SamplingParams]:
    """One SamplingParams per prompt. A single one is shared, with its seed (if any) made distinct per
    prompt, so that every prompt of a seeded call gets its own reproducible random stream."""
    if isinstance(sampling, SamplingParams):
        if sampling.seed is None:
            return [sampling] * count
        return [replace(sampling, seed=sample_seed(sampling.seed, index)) for index in range(count)]
    if len(sampling) != count:
        raise ValueError(f"generate: {len(sampling)} SamplingParams for {count} prompts (one per prompt)")
    return list(sampling)


def sample_seed(seed: int, index: int | str) -> int:
    """A 63-bit seed for item `index` (a prompt, one of its n samples, a named part) of stream `seed`."""
    return random.Random(f"{seed}/{index}").randrange(2**63)


@runtime_checkable
class RolloutEngine(Protocol):
    """Generates completions for token-id prompts and receives new weights in place."""

    weight_version: int

    def generate(self, prompts: list[list[int]],
                 sampling: SamplingParams | Sequence[SamplingParams]) -> list[list[Completion]]:
        """Return `n` completions for every prompt, in prompt order; `sampling` is shared by all
        prompts or given per prompt (schemas, seeds, ... may differ by row), all sent as one wave."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> dict:
        """Load HF-named tensors (full, unsharded) as the new weights; return sync metrics
        (`seconds`, `gigabytes`)."""
        ...

    def close(self) -> None:
        """Release servers, processes and memory."""
        ...
