"""In-process rollout engine on Hugging Face transformers: the CPU default and the reference that
the SGLang engine is checked against."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from spice.rollout.base import Completion, SamplingParams, per_prompt, sample_seed
from spice.rollout.decode import Row, decode

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFRolloutEngine:
    """Batched sampling with a KV-cache decode loop (`spice.rollout.decode`); prompts are token ids,
    completions carry the policy's logprob (temperature 1, unmasked) of each sampled token and the
    weight version that produced them."""

    def __init__(self, model_dir: str | Path, *, dtype: str = "float32", batch_size: int = 16,
                 seed: int = 0, device: str | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=DTYPES[dtype])
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.seed = seed
        self._rng = torch.Generator().manual_seed(seed)  # seeds the rows of unseeded calls
        self._vocabulary = None  # constrained decoding's token masks, set by the first schema
        self.weight_version = 0
        self.progress = progress  # called with the number of sequences finished, for progress bars
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def generate(self, prompts: list[list[int]],
                 sampling: SamplingParams | Sequence[SamplingParams]) -> list[list[Completion]]:
        """`n` completions per prompt, with shared or per-prompt sampling (schemas, seeds, ... per row),
        in one pass over all rows. Every row draws from its own generator, seeded from the prompt's seed
        and the sample's index (else from the engine's seed), so a seeded call is reproducible."""
        params = per_prompt(sampling, len(prompts))
        rows: list[Row] = []
        for index, (prompt, p) in enumerate(zip(prompts, params)):
            grammar = self._grammar(p)
            for sample in range(p.n):
                seed = int(torch.randint(2**63 - 1, (1,), generator=self._rng)) if p.seed is None \
                    else sample_seed(p.seed, sample)
                generator = torch.Generator(self.device).manual_seed(seed)
                rows.append(Row(index, list(prompt), p, generator, grammar))
        # Rows of similar prompt length together waste less padding; the order is deterministic.
        ordered = sorted(rows, key=lambda row: (len(row.prompt), row.prompt_index))
        vocabulary = self._vocabulary if any(row.grammar is not None for row in rows) else None
        for start in range(0, len(ordered), self.batch_size):
            decode(self.model, ordered[start:start + self.batch_size], self.eos_ids,
                   self.tokenizer.pad_token_id, vocabulary, self.progress)
        results: list[list[Completion]] = [[] for _ in prompts]
        for row in rows:
            results[row.prompt_index].append(Completion(
                prompt_index=row.prompt_index,
                text=self.tokenizer.decode(row.tokens, skip_special_tokens=True),
                token_ids=row.tokens,
                logprobs=row.logprobs,
                finish_reason=row.finish_reason,
                weight_version=self.weight_version,
            ))
        return results

    def _grammar(self, sampling: SamplingParams):
        """The compiled grammar of the call's JSON schema or regex (cached), None when unconstrained."""
        if sampling.grammar is None:
            return None
        from spice.rollout.constrained import compiled_grammar

        kind, source = sampling.grammar
        grammar, self._vocabulary = compiled_grammar(self.tokenizer, kind, source, self.model.config.vocab_size,
                                                     stop_token_ids=self.eos_ids)
        return grammar

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> dict:
        """Copy HF-named tensors into the served model in place; unknown names are an error."""
        started = time.perf_counter()
        params = self.model.state_dict()  # views sharing storage with the parameters (tied ones too)
        moved = 0
        for name, tensor in named_tensors:
            if name not in params:
                raise KeyError(f"update_weights: the served model has no tensor named {name!r}")
            target = params[name]
            if target.shape != tensor.shape:
                raise ValueError(f"update_weights: {name} has shape {tuple(tensor.shape)}, "
                                 f"the served model expects {tuple(target.shape)}")
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))
            moved += tensor.numel() * tensor.element_size()
        self.weight_version = version
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "gigabytes": moved / 1e9,
                "gigabytes_per_second": moved / 1e9 / max(seconds, 1e-9)}

    def close(self) -> None:
        self.model = None
