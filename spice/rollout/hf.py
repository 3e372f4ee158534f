"""In-process rollout engine on Hugging Face transformers: the CPU default and the reference that
the SGLang engine is checked against."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from spice.rollout.base import Completion, SamplingParams

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFRolloutEngine:
    """Batched sampling with `model.generate`; prompts are token ids, completions carry per-token
    logprobs of the sampled tokens and the weight version that produced them."""

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
        self.weight_version = 0
        self.progress = progress  # called with the number of sequences finished, for progress bars
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[Completion]]:
        """`sampling.n` completions per prompt; with `sampling.seed` the result is reproducible."""
        jobs = [(index, prompt) for index, prompt in enumerate(prompts) for _ in range(sampling.n)]
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        results: list[list[Completion]] = [[] for _ in prompts]
        # Similar lengths together waste less padding; the order is deterministic.
        order = sorted(range(len(jobs)), key=lambda j: (len(jobs[j][1]), j))
        for start in range(0, len(order), self.batch_size):
            chunk = [jobs[j] for j in order[start:start + self.batch_size]]
            for (index, _), completion in zip(chunk, self._generate_chunk([p for _, p in chunk], sampling)):
                completion.prompt_index = index
                results[index].append(completion)
            if self.progress is not None:
                self.progress(len(chunk))
        return results

    def _generate_chunk(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Completion]:
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        greedy = sampling.temperature <= 0
        options = dict(
            max_new_tokens=sampling.max_new_tokens, do_sample=not greedy, pad_token_id=pad,
            eos_token_id=self.eos_ids, return_dict_in_generate=True, output_logits=True,
        )
        if not greedy:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.json_schema is not None:
            from spice.rollout.constrained import json_schema_logits_processor

            processor = json_schema_logits_processor(self.tokenizer, sampling.json_schema,
                                                     self.model.config.vocab_size, stop_token_ids=self.eos_ids)
            options["logits_processor"] = LogitsProcessorList([processor])
        output = self.model.generate(input_ids=input_ids, attention_mask=attention, **options)
        new_tokens = output.sequences[:, width:]
        # Logprobs of the unscaled policy (temperature 1), the distribution the trainer scores, so
        # that truncated importance sampling sees only the engine/trainer mismatch. One step at a time:
        # stacking [B, steps, V] logits would triple the memory of a long generation.
        steps = list(output.logits)
        output.logits = None
        logprobs = torch.zeros(new_tokens.shape, dtype=torch.float32)
        for step in range(len(steps)):
            step_logits, steps[step] = steps[step].float(), None
            logprobs[:, step] = torch.log_softmax(step_logits, dim=-1).gather(
                -1, new_tokens[:, step:step + 1]).squeeze(-1).cpu()
        completions = []
        for row in range(len(prompts)):
            ids = new_tokens[row].tolist()
            length, finish = len(ids), "length"
            for position, token in enumerate(ids):
                if token in self.eos_ids:
                    length, finish = position + 1, "stop"  # the EOS token is kept: it is trained
                    break
            ids = ids[:length]
            completions.append(Completion(
                prompt_index=row,
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                token_ids=ids,
                logprobs=logprobs[row, :length].tolist(),
                finish_reason=finish,
                weight_version=self.weight_version,
            ))
        return completions

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
