"""Policy drift from the initial model: a fixed probe set of corpus prompts with continuations sampled
once from the initial weights, and their logprobs under those weights; every K iterations the current
weights score the same tokens and `monitors.policy_kl` compares them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from spice.chat import chat_prompt_ids
from spice.corpus import Document
from spice.guard.monitors import policy_kl
from spice.rollout.base import RolloutEngine, SamplingParams
from spice.train.base import Batch

Logprobs = Callable[[Batch], torch.Tensor]


def probe_batch(engine: RolloutEngine, tokenizer, documents: list[Document], tokens: int, seed: int) -> Batch:
    """Prompts from `documents`, one continuation each sampled at temperature 1 (so that the summed
    log-ratio estimates KL(initial || current)); padded like the training batch."""
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": f"Explain this passage:\n\n{d.text}"}])
               for d in documents]
    sampling = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_new_tokens=tokens, seed=seed)
    completions = [group[0] for group in engine.generate(prompts, sampling)]
    width = max(len(p) + len(c.token_ids) for p, c in zip(prompts, completions))
    shape = (len(prompts), width)
    input_ids = torch.full(shape, tokenizer.pad_token_id, dtype=torch.long)
    attention, loss_mask = torch.zeros(shape, dtype=torch.long), torch.zeros(shape)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        end = len(prompt) + len(completion.token_ids)
        input_ids[row, :end] = torch.tensor(prompt + completion.token_ids)
        attention[row, :end] = 1
        loss_mask[row, len(prompt):end] = 1
    return Batch(input_ids, attention, loss_mask, torch.zeros(shape), torch.zeros(shape),
                 ["reasoner"] * len(prompts))


def save_probe(path: Path, batch: Batch, reference: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
               "loss_mask": batch.loss_mask, "reference": reference.float()}, str(path))


def load_probe(path: Path) -> tuple[Batch, torch.Tensor]:
    t = load_file(str(path))
    shape = t["input_ids"].shape
    batch = Batch(t["input_ids"], t["attention_mask"], t["loss_mask"], torch.zeros(shape), torch.zeros(shape),
                  ["reasoner"] * shape[0])
    return batch, t["reference"]


Share = Callable[[object], object]  # rank 0's value on every rank (the run's control-group broadcast)


def reference_logprobs(batch: Batch | None, logprobs: Logprobs, share: Share) -> torch.Tensor | None:
    """The initial weights' logprobs of the probe (built on rank 0, shared: a sharded backend scores it
    collectively); every rank calls it, rank 0 gets the result."""
    batch = share(batch)
    return None if batch is None else logprobs(batch)


def measure(batch: Batch | None, reference: torch.Tensor | None, logprobs: Logprobs, share: Share) -> float | None:
    """KL(initial || current) on the probe set; every rank calls it, None where there is no probe."""
    batch = share(batch)
    if batch is None:
        return None
    current = logprobs(batch)
    return None if reference is None else policy_kl(reference, current, batch.loss_mask)
