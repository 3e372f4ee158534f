"""Training backend on plain torch: any causal LM transformers loads, AdamW, gradient accumulation
over micro-batches, optional gradient checkpointing, DDP when started by torchrun."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer

from spice.config import SpiceConfig
from spice.grpo import grpo_loss
from spice.rollout.hf import DTYPES
from spice.train.base import Batch


def init_distributed(timeout_minutes: float = 30.0) -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU) with `timeout_minutes`
    (train.distributed_timeout_minutes) on its collectives; (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def loss_normalizer(config: SpiceConfig, batch: Batch) -> float:
    """The loss denominator shared by every micro-batch and rank, so the update does not depend on
    how the global batch is split."""
    aggregation = config.loss.aggregation
    if aggregation == "token_sum":
        constant = config.loss.normalizer or max(config.challenger.max_new_tokens,
                                                 config.reasoner.max_new_tokens)
        return float(constant * batch.num_sequences)
    if aggregation == "token_mean":
        return float(batch.loss_mask.sum().clamp_min(1))
    return float(batch.num_sequences)


class TorchBackend:
    """The policy as a Hugging Face model trained with the GRPO loss on its final hidden states."""

    def __init__(self, config: SpiceConfig, model_dir: str | Path) -> None:
        self.config = config
        self.model_dir = Path(model_dir)
        self.rank, self.world_size = init_distributed(config.train.distributed_timeout_minutes)
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
        torch.manual_seed(config.run.seed)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[config.model.dtype],
                                                     trust_remote_code=config.model.trust_remote_code)
        model.to(self.device)
        if config.optim.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        self.model = model
        self.module: torch.nn.Module = HiddenStates(model)
        if self.world_size > 1:
            self.module = torch.nn.parallel.DistributedDataParallel(
                self.module, device_ids=[self.device.index] if cuda else None)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.optim.lr, betas=tuple(config.optim.betas),
            eps=config.optim.eps, weight_decay=config.optim.weight_decay)

    def _hidden(self, module: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return module(batch.input_ids.to(self.device), batch.attention_mask.to(self.device))

    def _loss(self, batch: Batch, normalizer: float, hidden: torch.Tensor, old_logprobs: torch.Tensor | None = None):
        """GRPO loss of one micro-batch: position t-1's hidden state predicts token t. `old_logprobs`
        (flat, masked tokens only): the first epoch's, which later PPO epochs clip against."""
        loss_cfg = self.config.loss
        mask = batch.loss_mask[:, 1:].to(self.device)
        rows = mask.shape[0]
        sequence_ids = torch.arange(rows, device=self.device).unsqueeze(1).expand_as(mask)
        keep = mask.reshape(-1) > 0
        options = dict(
            rollout_logprobs=batch.rollout_logprobs[:, 1:].to(self.device).reshape(-1)[keep],
            tis_cap=loss_cfg.tis_cap, clip_low=loss_cfg.clip_low, clip_high=loss_cfg.clip_high,
            aggregation=loss_cfg.aggregation, normalizer=normalizer,
            sequence_ids=sequence_ids.reshape(-1)[keep], old_logprobs=old_logprobs,
        )
        flat_hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])[keep]
        targets = batch.input_ids[:, 1:].to(self.device).reshape(-1)[keep]
        advantages = batch.advantages[:, 1:].to(self.device).reshape(-1)[keep].float()
        weight = self.model.get_output_embeddings().weight
        return grpo_loss(flat_hidden, weight, targets, advantages, torch.ones_like(advantages),
                         implementation=loss_cfg.implementation, **options)

    def _shard(self, batch: Batch) -> Batch:
        """This rank's rows of the global batch (every rank holds the same global batch)."""
        return batch.select(list(range(self.rank, batch.num_sequences, self.world_size)))

    def _micro_batches(self, batch: Batch) -> Iterator[Batch]:
        size = self.config.optim.micro_batch_size
        for start in range(0, batch.num_sequences, size):
            rows = slice(start, start + size)
            micro = batch.select(rows)
            width = int(micro.attention_mask.sum(dim=1).max())  # trim right padding
            yield Batch(micro.input_ids[:, :width], micro.attention_mask[:, :width],
                        micro.loss_mask[:, :width], micro.advantages[:, :width],
                        micro.rollout_logprobs[:, :width], micro.roles)

    @torch.no_grad()
    def logprobs(self, batch: Batch) -> torch.Tensor:
        out = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        weight = self.model.get_output_embeddings().weight
        for start in range(0, batch.num_sequences, self.config.optim.micro_batch_size):
            micro = batch.select(slice(start, start + self.config.optim.micro_batch_size))
            hidden = self._hidden(HiddenStates(self.model), micro)[:, :-1]
            logits = (hidden.float() @ weight.float().T)
            targets = micro.input_ids[:, 1:].to(self.device)
            values = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            rows = micro.num_sequences
            out[start:start + rows, 1:] = values.cpu() * micro.loss_mask[:, 1:]
        return out

    def _epoch(self, micro_batches: list[Batch], normalizer: float,
               old: list[torch.Tensor | None]) -> tuple[float, float, float, int]:
        """One optimizer step over every micro-batch; fills `old` with this pass's logprobs where it is
        None (the first epoch). Returns (loss, grad norm, tokens outside the clip range, tokens scored)."""
        loss_cfg = self.config.loss
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, clipped, scored = 0.0, 0, 0
        for index, micro in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            sync = self.module.no_sync() if (self.world_size > 1 and not last) else contextlib.nullcontext()
            with sync:
                hidden = self._hidden(self.module, micro)
                loss, logp = self._loss(micro, normalizer, hidden, old[index])
                # DDP averages gradients over ranks; the loss already has the global denominator.
                (loss * self.world_size).backward()
            logp = logp.detach().float()
            if old[index] is None:
                old[index] = logp
            else:
                ratio = torch.exp(logp - old[index])
                outside = (ratio < 1.0 - loss_cfg.clip_low) | (ratio > 1.0 + loss_cfg.clip_high)
                clipped += int(outside.sum())
            scored += logp.numel()
            total_loss += float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        return total_loss, float(grad_norm), clipped, scored

    def step(self, batch: Batch) -> dict[str, float]:
        """`optim.ppo_epochs` optimizer steps on the batch; the first pass's logprobs (before any update)
        are the old policy's, which later epochs' ratios are clipped against (`loss.clip_low/high`)."""
        started = time.perf_counter()
        if batch.num_sequences < self.world_size:
            raise RuntimeError(f"the batch has {batch.num_sequences} sequences for {self.world_size} "
                               "data-parallel ranks; raise run.documents_per_iteration")
        normalizer = loss_normalizer(self.config, batch)
        local = self._shard(batch)
        self.module.train()
        micro_batches = list(self._micro_batches(local))
        tokens = sum(int(micro.attention_mask.sum()) for micro in micro_batches)
        old: list[torch.Tensor | None] = [None] * len(micro_batches)
        epochs = [self._epoch(micro_batches, normalizer, old) for _ in range(self.config.optim.ppo_epochs)]
        self.module.eval()
        stats = [epochs[0][0], epochs[-1][0], float(tokens), float(sum(e[2] for e in epochs[1:])),
                 float(sum(e[3] for e in epochs[1:]))]
        if self.world_size > 1:
            reduced = torch.tensor(stats, dtype=torch.float64, device=self.device)
            dist.all_reduce(reduced)
            stats = reduced.tolist()
        first_loss, last_loss, tokens, clipped, scored = stats[0], stats[1], int(stats[2]), stats[3], stats[4]
        seconds = time.perf_counter() - started
        metrics = {"loss": first_loss, "grad_norm": epochs[0][1], "train_tokens": tokens,
                   "train_tokens_per_second": tokens * len(epochs) / max(seconds, 1e-9)}
        if len(epochs) > 1:  # loss and norm above are the first epoch's (at the rollout policy)
            metrics.update(last_epoch_loss=last_loss, last_epoch_grad_norm=epochs[-1][1],
                           clip_fraction=clipped / max(scored, 1.0))
        return metrics

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in self.model.state_dict().items():
            yield name, tensor.detach()

    def save_checkpoint(self, path: str | Path) -> None:
        if self.rank != 0:  # DDP replicas hold identical weights and optimizer state
            return
        path = Path(path)
        self.model.save_pretrained(path / "model", safe_serialization=True)
        # with the tokenizer, a checkpoint's model/ folder is a complete HF model (eval, serving)
        AutoTokenizer.from_pretrained(self.model_dir).save_pretrained(path / "model")
        torch.save(self.optimizer.state_dict(), path / "optimizer.pt")

    def load_checkpoint(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        path = Path(path)
        state = {}
        for file in sorted((path / "model").glob("*.safetensors")):
            state.update(load_file(file, device=str(self.device)))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        tied = {name for name in missing if name.endswith("lm_head.weight")}
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"checkpoint {path}: missing {sorted(set(missing) - tied)}, "
                               f"unexpected {sorted(unexpected)}")
        if self.model.config.tie_word_embeddings:
            self.model.tie_weights()
        from spice.checkpoint import load_tensors_safely

        self.optimizer.load_state_dict(load_tensors_safely(path / "optimizer.pt", map_location=self.device))


class HiddenStates(torch.nn.Module):
    """The model up to its final norm: the loss applies the output weight itself (fused kernel)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return output.last_hidden_state
