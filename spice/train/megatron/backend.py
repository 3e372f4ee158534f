"""`MegatronBackend`: the `TrainBackend` seam on megatron-core (tensor, pipeline and data parallel).

Every rank of the torchrun job constructs the backend and calls each method with the same global
`Batch`; rows are split over data-parallel ranks, micro-batches run through megatron's
forward-backward schedule (1F1B across pipeline stages) and the GRPO loss is computed on the last
stage against this rank's vocab shard of the output weight. On GPUs the model is wrapped in
megatron's DDP and stepped by its (distributed) optimizer; on a CPU (tests) plain torch AdamW over
the same model and schedule, with the CPU shims of `cpu_shims`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from spice.config import SpiceConfig
from spice.train.base import Batch
from spice.train.megatron import cpu_shims
from spice.train.megatron.hf_io import iter_hf_buckets, load_hf_into, param_grad, param_value, save_hf
from spice.train.megatron.loss import MicroBatch, score
from spice.train.megatron.model import (
    build_model,
    layer_spec,
    params_dtype,
    read_hf_arch,
    transformer_config,
    use_transformer_engine,
)
from spice.train.megatron.padding import padded_width
from spice.train.megatron.parallel import init_parallel
from spice.train.torch_backend import loss_normalizer


class MegatronBackend:
    """The policy as a megatron-core GPTModel, sharded TP x PP and replicated DP."""

    def __init__(self, config: SpiceConfig, model_dir: str | Path) -> None:
        self.config = config
        self.model_dir = Path(model_dir)
        mcfg = config.train.megatron
        self.on_cuda = torch.cuda.is_available()
        if not self.on_cuda:
            if mcfg.bf16:
                raise RuntimeError("train.megatron.bf16=true needs megatron's mixed-precision optimizer, which needs "
                                   "CUDA; set train.megatron.bf16=false on a CPU")
            cpu_shims.apply()
        from megatron.core import parallel_state as ps

        self.layout = init_parallel(mcfg, config.run.seed, config.train.distributed_timeout_minutes)
        self.arch = read_hf_arch(self.model_dir)
        use_te = use_transformer_engine(mcfg)
        self.tconfig = transformer_config(self.arch, mcfg, on_cuda=self.on_cuda, use_te=use_te)
        self.dtype = params_dtype(mcfg)
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if self.on_cuda else "cpu")
        model = build_model(self.arch, self.tconfig, layer_spec(self.arch, use_te), self.arch.vocab_size,
                            pre_process=ps.is_pipeline_first_stage(), post_process=ps.is_pipeline_last_stage())
        if self.on_cuda:
            model.cuda(torch.cuda.current_device())
        load_hf_into(model, self.arch, self.model_dir, self.layout)
        self.model = model
        self.tp_group = ps.get_tensor_model_parallel_group() if self.layout.tp_size > 1 else None
        if self.on_cuda:
            self._setup_megatron_optimizer()
        else:
            self._setup_torch_optimizer()

    # ----- optimizer set-up -------------------------------------------------------------------

    def _setup_megatron_optimizer(self) -> None:
        """Megatron's DDP (grads in fp32 buckets) and its optimizer (distributed when configured)."""
        from megatron.core.distributed import (
            DistributedDataParallel,
            DistributedDataParallelConfig,
            finalize_model_grads,
        )
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        mcfg, optim = self.config.train.megatron, self.config.optim
        ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                                   use_distributed_optimizer=mcfg.use_distributed_optimizer)
        self.wrapped = DistributedDataParallel(config=self.tconfig, ddp_config=ddp_config, module=self.model)
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(optimizer="adam", lr=optim.lr, weight_decay=optim.weight_decay,
                            adam_beta1=optim.betas[0], adam_beta2=optim.betas[1], adam_eps=optim.eps,
                            clip_grad=optim.grad_clip, bf16=mcfg.bf16, params_dtype=self.dtype,
                            use_distributed_optimizer=mcfg.use_distributed_optimizer),
            [self.wrapped])
        # The loss already carries the global denominator: drop the per-token rescaling.
        self.tconfig.finalize_model_grads_func = functools.partial(_without_token_scaling, finalize_model_grads)
        self.tconfig.no_sync_func = self.wrapped.no_sync
        self.tconfig.grad_scale_func = self.optimizer.scale_loss

    def _setup_torch_optimizer(self) -> None:
        optim = self.config.optim
        self.wrapped = self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=optim.lr, betas=tuple(optim.betas),
                                           eps=optim.eps, weight_decay=optim.weight_decay)
        self.tconfig.finalize_model_grads_func = _finalize_grads_cpu
        self.tconfig.no_sync_func = None
        self.tconfig.grad_scale_func = None

    # ----- data -------------------------------------------------------------------------------

    def _local_rows(self, batch: Batch) -> list[int]:
        layout = self.layout
        if batch.num_sequences < layout.dp_size:
            raise RuntimeError(f"the batch has {batch.num_sequences} sequences for {layout.dp_size} data-parallel "
                               "ranks; raise run.documents_per_iteration")
        return list(range(layout.dp_rank, batch.num_sequences, layout.dp_size))

    def _micro_batches(self, batch: Batch, rows: list[int]) -> tuple[list[MicroBatch], int, int]:
        """This rank's micro-batches, all of one shape [mbs, T] (pipeline stages exchange fixed shapes):
        T is the longest sequence, rounded up so that each TP rank's shard under sequence parallelism
        meets the FP8 recipe's alignment (`padding.sequence_multiple`); rows are padded with fully
        masked dummies."""
        mbs = min(self.config.optim.micro_batch_size, len(rows))
        width = padded_width(int(batch.attention_mask[rows].sum(dim=1).max()), self.config.train.megatron)
        padded = rows + [-1] * (-len(rows) % mbs)
        micro = []
        for start in range(0, len(padded), mbs):
            chunk = padded[start:start + mbs]
            index = torch.tensor([max(r, 0) for r in chunk])
            real = torch.tensor([r >= 0 for r in chunk]).unsqueeze(1)

            def take(t: torch.Tensor, index: torch.Tensor = index, real: torch.Tensor = real) -> torch.Tensor:
                out = t[index, :width]
                out = torch.nn.functional.pad(out, (0, width - out.shape[1]))
                return (out * real.to(out.dtype)).to(self.device)

            input_ids = take(batch.input_ids)
            micro.append(MicroBatch(
                input_ids=input_ids,
                position_ids=torch.arange(width, device=self.device).unsqueeze(0).expand_as(input_ids),
                loss_mask=take(batch.loss_mask), advantages=take(batch.advantages).float(),
                rollout_logprobs=take(batch.rollout_logprobs).float(),
                rows=torch.tensor(chunk, device=self.device)))
        return micro, mbs, width

    # ----- the schedule -----------------------------------------------------------------------

    def _run(self, micro: list[MicroBatch], mbs: int, width: int, normalizer: float,
             forward_only: bool) -> list[dict[str, Any]]:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        model, loss_cfg = self.model, self.config.loss
        # Causal attention: the fused CUDA paths build the mask themselves; on a CPU it is passed in
        # (True = masked). Right padding needs no more: padded positions come after real tokens.
        mask = None if self.on_cuda else torch.ones(width, width, dtype=torch.bool).triu(1)[None, None]

        def forward_step(data_iterator: Iterator[MicroBatch], module: torch.nn.Module) -> tuple[torch.Tensor, Any]:
            item = next(data_iterator)
            output = module(input_ids=item.input_ids, position_ids=item.position_ids, attention_mask=mask)

            def loss_func(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
                if self.tconfig.sequence_parallel:
                    from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

                    hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=False)
                loss, logprobs = score(hidden.transpose(0, 1), model.output_weight(), item, loss_cfg,
                                       normalizer, self.tp_group)
                tokens = item.loss_mask[:, 1:].sum().to(torch.int)
                return loss, tokens, {"loss": loss.detach(), "logprobs": logprobs, "rows": item.rows}

            return output, loss_func

        return get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(micro), model=self.wrapped,
            num_microbatches=len(micro), seq_length=width, micro_batch_size=mbs, forward_only=forward_only)

    # ----- the seam ---------------------------------------------------------------------------

    @torch.no_grad()
    def logprobs(self, batch: Batch) -> torch.Tensor:
        """Per-token log-probabilities [S, T] (0 off the loss mask), identical on every rank."""
        self.model.eval()
        micro, mbs, width = self._micro_batches(batch, self._local_rows(batch))
        outputs = self._run(micro, mbs, width, normalizer=1.0, forward_only=True)
        out = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        if self._reports():
            for item in outputs:
                real = item["rows"] >= 0
                columns = min(width, out.shape[1])
                out[item["rows"][real].cpu(), :columns] = item["logprobs"][real, :columns].cpu()
        return self._share(out)

    def step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on the GRPO loss over the global batch."""
        started = time.perf_counter()
        normalizer = loss_normalizer(self.config, batch)
        rows = self._local_rows(batch)
        micro, mbs, width = self._micro_batches(batch, rows)
        self.model.train()
        if self.on_cuda:
            self.wrapped.zero_grad_buffer()
            self.optimizer.zero_grad()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        outputs = self._run(micro, mbs, width, normalizer, forward_only=False)
        if self.on_cuda:
            _, grad_norm, _ = self.optimizer.step()
        else:
            grad_norm = _clip_grads_cpu(self.model, self.config.optim.grad_clip)
            self.optimizer.step()
        self.model.eval()
        loss = sum(float(item["loss"]) for item in outputs) if self._reports() else 0.0
        tokens = int(batch.attention_mask[rows].sum()) if self.layout.tp_rank == 0 and self.layout.last_stage else 0
        stats = self._share(torch.tensor([loss, float(tokens)], dtype=torch.float64))
        seconds = time.perf_counter() - started
        return {"loss": float(stats[0]), "grad_norm": float(grad_norm if grad_norm is not None else 0.0),
                "train_tokens": int(stats[1]), "train_tokens_per_second": float(stats[1]) / max(seconds, 1e-9)}

    def _reports(self) -> bool:
        """One rank per data-parallel replica contributes results: TP rank 0 of the last stage."""
        return self.layout.last_stage and self.layout.tp_rank == 0

    def _share(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum the reporting ranks' contributions and give the result to every rank."""
        if self.layout.world_size == 1:
            return tensor
        moved = tensor.to(self.device)
        dist.all_reduce(moved)
        return moved.cpu()

    def hf_buckets(self, bucket_bytes: int | None = None, grads: bool = False
                   ) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Full HF-named weights in buckets; a collective: every rank iterates and every rank gets all.
        `grads` exports `param_grad` instead, a test helper (see there: not the clipped update on GPUs)."""
        size = bucket_bytes or self.config.rollout.sglang.bucket_megabytes * 2**20
        value = param_grad if grads else param_value
        dtype = torch.float32 if grads else self.dtype
        return iter_hf_buckets(self.model, self.arch, self.layout, dtype, size, value)

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor) for rollout weight sync; a collective over all ranks."""
        for bucket in self.hf_buckets():
            yield from bucket

    def save_hf(self, path: str | Path) -> None:
        """Write a Hugging Face checkpoint (sharded safetensors, config, tokenizer) from global rank 0."""
        save_hf(self.hf_buckets(), path, self.model_dir, write=self.layout.rank == 0)
        if self.layout.world_size > 1:
            dist.barrier()

    def save_checkpoint(self, path: str) -> None:
        """HF weights under `path/model`, plus each model-parallel rank's optimizer and RNG state."""
        path_ = Path(path)
        self.save_hf(path_ / "model")
        layout = self.layout
        state = {"rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state() if self.on_cuda else None}
        if self.on_cuda and self.config.train.megatron.use_distributed_optimizer:
            self.optimizer.save_parameter_state(str(path_ / f"optimizer_params_tp{layout.tp_rank}_pp{layout.pp_rank}.pt"))
        if layout.dp_rank == 0:
            state["optimizer"] = self.optimizer.state_dict()
            torch.save(state, path_ / f"optimizer_tp{layout.tp_rank}_pp{layout.pp_rank}.pt")
        if layout.world_size > 1:
            dist.barrier()

    def load_checkpoint(self, path: str) -> None:
        """Restore what `save_checkpoint` wrote (same TP x PP layout)."""
        path_ = Path(path)
        layout = self.layout
        load_hf_into(self.model, self.arch, path_ / "model", layout)
        file = path_ / f"optimizer_tp{layout.tp_rank}_pp{layout.pp_rank}.pt"
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing: checkpoints load only into the TP x PP layout that wrote them")
        from spice.checkpoint import load_tensors_safely

        state = load_tensors_safely(file)  # weights_only: a tampered run folder cannot run code
        if self.on_cuda:
            self.optimizer.reload_model_params()
            self.optimizer.load_state_dict(state["optimizer"])
            if self.config.train.megatron.use_distributed_optimizer:
                self.optimizer.load_parameter_state(
                    str(path_ / f"optimizer_params_tp{layout.tp_rank}_pp{layout.pp_rank}.pt"))
            torch.cuda.set_rng_state(state["cuda_rng"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])


def _without_token_scaling(finalize: Any, model: list[torch.nn.Module], num_tokens: Any, **kwargs: Any) -> None:
    finalize(model, None, **kwargs)


def _finalize_grads_cpu(model: list[torch.nn.Module], num_tokens: Any = None, **kwargs: Any) -> None:
    """CPU stand-in for megatron's finalize_model_grads: sum the q/k-norm gradients over TP ranks,
    all gradients over data-parallel replicas, and the tied embedding's over its two pipeline stages."""
    from megatron.core import parallel_state as ps

    module = model[0]
    tp_group = ps.get_tensor_model_parallel_group()
    if dist.get_world_size(tp_group) > 1:
        # Each TP rank sees only its heads: the replicated q/k norms' gradients are partial sums.
        for name, param in module.named_parameters():
            if param.grad is not None and ("q_layernorm" in name or "k_layernorm" in name):
                dist.all_reduce(param.grad, group=tp_group)
    dp_group = ps.get_data_parallel_group()
    if dist.get_world_size(dp_group) > 1:
        for param in module.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad, group=dp_group)
    if (ps.get_pipeline_model_parallel_world_size() > 1 and module.share_embeddings_and_output_weights
            and ps.is_rank_in_embedding_group()):
        weight = module.shared_embedding_or_output_weight()
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        dist.all_reduce(weight.grad, group=ps.get_embedding_group())


def _clip_grads_cpu(module: torch.nn.Module, max_norm: float) -> float:
    """Global gradient norm over TP x PP (each parameter counted once) and clipping to `max_norm`."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate
    from megatron.core.transformer.module import param_is_not_shared

    grads = [p.grad for p in module.parameters() if p.grad is not None]
    counted = [p.grad for p in module.parameters()
               if p.grad is not None and param_is_not_shared(p) and param_is_not_tensor_parallel_duplicate(p)]
    total = torch.zeros((), dtype=torch.float32)
    for grad in counted:
        total += grad.float().pow(2).sum()
    if dist.get_world_size(ps.get_model_parallel_group()) > 1:
        dist.all_reduce(total, group=ps.get_model_parallel_group())
    norm = float(total.sqrt())
    if max_norm > 0 and norm > max_norm:
        for grad in grads:
            grad.mul_(max_norm / (norm + 1e-6))
    return norm
