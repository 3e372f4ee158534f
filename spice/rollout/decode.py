"""The in-process engine's decode loop: a KV cache, one forward per step over the unfinished rows only,
and per row its own sampling settings, JSON-schema grammar and random stream.

Each row's logprob is taken from the raw logits (log_softmax at temperature 1, before the grammar mask,
temperature and top-p), the distribution the trainer scores; only the sampled token's value is kept,
never [batch, steps, vocab]. Sampling follows transformers' order: grammar mask, temperature, top-p."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from spice.rollout.base import SamplingParams


@dataclass
class Row:
    """One sequence being generated: sample `sample` of prompt `prompt_index`."""

    prompt_index: int
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator
    grammar: object | None = None  # an xgrammar CompiledGrammar, or None when free
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"


def top_p_filter(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """transformers' TopPLogitsWarper with one p per row: drop the tokens outside the smallest set whose
    probability reaches p (keeping at least one)."""
    ordered, index = scores.sort(dim=-1)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p).unsqueeze(1)
    remove[:, -1] = False
    return scores.masked_fill(remove.scatter(1, index, remove), float("-inf"))


def choose_tokens(scores: torch.Tensor, rows: list[Row]) -> torch.Tensor:
    """The next token of each row from its (masked) logits: argmax at temperature <= 0, else a sample
    at its temperature and top-p drawn from the row's own generator."""
    tokens = scores.argmax(dim=-1)
    sampled = [i for i, row in enumerate(rows) if row.params.temperature > 0]
    if not sampled:
        return tokens
    index = torch.tensor(sampled, device=scores.device)
    temperature = torch.tensor([rows[i].params.temperature for i in sampled], device=scores.device)
    warped = scores[index] / temperature.unsqueeze(1)
    top_p = torch.tensor([rows[i].params.top_p for i in sampled], device=scores.device)
    if (top_p < 1).any():
        warped = top_p_filter(warped, top_p)
    probs = warped.softmax(dim=-1)
    for position, i in enumerate(sampled):
        tokens[i] = torch.multinomial(probs[position], 1, generator=rows[i].generator)[0]
    return tokens


def _keyword(model, *names: str) -> str:
    """The first of `names` that `model.forward` takes (transformers renamed some across versions)."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in names if name in parameters), names[-1])


@torch.no_grad()
def decode(model, rows: list[Row], eos_ids: list[int], pad_id: int, vocabulary=None,
           on_finish=None) -> None:
    """Generate every row to EOS or its `max_new_tokens`, filling `tokens`, `logprobs` and
    `finish_reason` in place. Rows with the same prompt share one prefill; a row that finishes leaves
    the batch (its KV cache rows are dropped). `vocabulary` is the constrained-decoding token masks,
    needed when a row has a grammar; `on_finish(k)` is told when k rows have finished."""
    rows = [row for row in rows if row.params.max_new_tokens > 0 or _finish_empty(row, on_finish)]
    if not rows:
        return
    device = next(model.parameters()).device
    stops = torch.tensor(sorted(set(eos_ids)), device=device)
    unique: dict[tuple[int, ...], int] = {}
    for row in rows:
        unique.setdefault(tuple(row.prompt), len(unique))
    prompts = list(unique)
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (attention.cumsum(dim=-1) - 1).clamp(min=0)
    cache = DynamicCache()
    cache_key = _keyword(model, "cache", "past_key_values")
    keep_key = _keyword(model, "logits_to_keep", "num_logits_to_keep")
    output = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                   **{cache_key: cache, keep_key: 1})
    expand = torch.tensor([unique[tuple(row.prompt)] for row in rows], device=device)
    if len(prompts) != len(rows) or not torch.equal(expand, torch.arange(len(rows), device=device)):
        cache.batch_select_indices(expand)
    logits = output.logits[:, -1].float()[expand]
    attention, position = attention[expand], positions[expand, -1]
    del output, input_ids
    grammars = None
    if any(row.grammar is not None for row in rows):
        from spice.rollout.constrained import RowGrammars

        grammars = RowGrammars([row.grammar for row in rows], vocabulary)
    while True:
        normalizer = torch.logsumexp(logits, dim=-1)
        scores = logits if grammars is None else grammars.mask(logits.clone())
        tokens = choose_tokens(scores, rows)
        logprobs = (logits.gather(1, tokens.unsqueeze(1)).squeeze(1) - normalizer).tolist()
        stopped = torch.isin(tokens, stops).tolist()
        chosen = tokens.tolist()
        keep = []
        for i, row in enumerate(rows):
            row.tokens.append(chosen[i])
            row.logprobs.append(logprobs[i])
            if stopped[i]:
                row.finish_reason = "stop"  # the EOS token is kept: it is trained
            elif len(row.tokens) < row.params.max_new_tokens:
                keep.append(i)
        if on_finish is not None and len(keep) < len(rows):
            on_finish(len(rows) - len(keep))
        if not keep:
            return
        if grammars is not None:
            grammars.advance(chosen)
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            rows, tokens, attention, position = [rows[i] for i in keep], tokens[index], attention[index], \
                position[index]
            if grammars is not None:
                grammars.select(keep)
        attention = torch.cat([attention, attention.new_ones(len(rows), 1)], dim=1)
        position = position + 1
        output = model(input_ids=tokens.unsqueeze(1), attention_mask=attention, position_ids=position.unsqueeze(1),
                       use_cache=True, **{cache_key: cache, keep_key: 1})
        logits = output.logits[:, -1].float()
        del output


def _finish_empty(row: Row, on_finish) -> bool:
    """A row with no token budget is finished before it starts (finish reason "length")."""
    if on_finish is not None:
        on_finish(1)
    return False
