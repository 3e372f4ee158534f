"""Dr. GRPO: group-mean advantages, the clipped policy loss in plain torch, and dispatch to the fused kernel.

`grpo_loss_reference` is the specification: it materialises the [N, V] logits in fp32 (float64 for
float64 inputs) and is what `spice.kernels.fused_grpo_loss` is tested against. Training backends call
`grpo_loss`, which uses this reference unless the fused Triton kernel is asked for by name.

Both share `policy_loss`, the O(N) part that turns per-token log-probabilities into the loss: ratio to
the old policy, asymmetric clipping, truncated importance sampling, k3 KL and the aggregation.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

AGGREGATIONS = ("token_sum", "token_mean", "seq_mean")
IMPLEMENTATIONS = ("auto", "fused", "reference")


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, std_normalize: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """Reward minus its group's mean (Dr. GRPO); divided by the group's population std (GRPO) with the
    switch: the convention of the paper (Var = p(1-p)) and of `spice.scoring`.

    `group_ids` labels each reward with its group (any integers); singleton groups get advantage 0.
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"group_advantages: rewards {tuple(rewards.shape)} and group_ids {tuple(group_ids.shape)} "
            "must be 1-D and of the same length"
        )
    rewards = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    if rewards.numel() == 0:
        return rewards.clone()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1
    count = torch.zeros(groups, dtype=rewards.dtype, device=rewards.device).index_add_(
        0, inverse, torch.ones_like(rewards)
    )
    mean = torch.zeros_like(count).index_add_(0, inverse, rewards) / count
    centred = rewards - mean[inverse]
    if not std_normalize:
        return centred
    square = torch.zeros_like(count).index_add_(0, inverse, centred * centred)
    std = (square / count).sqrt()
    return centred / (std[inverse] + eps)


def _check_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    options: dict,
) -> None:
    """Raise a ValueError naming the input whose shape or value does not fit."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"grpo_loss: hidden {tuple(hidden.shape)} must be [N, H] and weight {tuple(weight.shape)} [V, H]"
        )
    n = hidden.shape[0]
    for name, tensor in (("targets", targets), ("advantages", advantages), ("mask", mask)):
        if tensor.shape != (n,):
            raise ValueError(f"grpo_loss: {name} has shape {tuple(tensor.shape)}, expected ({n},)")
    for name in ("old_logprobs", "rollout_logprobs", "ref_logprobs", "sequence_ids"):
        value = options.get(name)
        if value is not None and value.shape != (n,):
            raise ValueError(f"grpo_loss: {name} has shape {tuple(value.shape)}, expected ({n},)")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"grpo_loss: targets must be integer token ids, got {targets.dtype}")


def policy_loss(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logprobs: torch.Tensor | None = None,
    rollout_logprobs: torch.Tensor | None = None,
    tis_cap: float | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token_sum",
    normalizer: float | None = None,
    sequence_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The clipped GRPO loss from per-token log-probabilities [N] (shared by reference and kernel).

    Per token: -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A) with r = exp(logp - old), times the
    truncated importance weight min(exp(old - rollout), tis_cap) (detached; policy term only), plus
    kl_coef * k3(ref, logp); then masked and aggregated (see `grpo_loss_reference`).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"grpo_loss: aggregation {aggregation!r} is not one of {AGGREGATIONS}")
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"grpo_loss: clip_low {clip_low} and clip_high {clip_high} must be >= 0")
    dtype = logprobs.dtype
    advantages = advantages.to(dtype)
    mask = mask.to(dtype)
    old = logprobs.detach() if old_logprobs is None else old_logprobs.to(dtype).detach()
    ratio = torch.exp(logprobs - old)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    if tis_cap is not None:
        if rollout_logprobs is None:
            raise ValueError("grpo_loss: tis_cap is set but rollout_logprobs is None")
        tis = torch.exp(old - rollout_logprobs.to(dtype).detach()).clamp(max=tis_cap)
        per_token = per_token * tis
    if ref_logprobs is not None and kl_coef != 0.0:
        delta = ref_logprobs.to(dtype).detach() - logprobs
        per_token = per_token + kl_coef * (torch.exp(delta) - delta - 1.0)
    masked = per_token * mask
    if aggregation == "token_sum":
        if normalizer is None:
            raise ValueError(
                "grpo_loss: aggregation 'token_sum' needs normalizer (Dr. GRPO's constant, e.g. the "
                "maximum generation length times the number of sequences in the global batch)"
            )
        return masked.sum() / normalizer
    if aggregation == "token_mean":
        denominator = mask.sum().clamp(min=1.0) if normalizer is None else normalizer
        return masked.sum() / denominator
    if sequence_ids is None:
        raise ValueError("grpo_loss: aggregation 'seq_mean' needs sequence_ids [N]")
    _, inverse = torch.unique(sequence_ids, return_inverse=True)
    sequences = int(inverse.max()) + 1 if inverse.numel() else 0
    sums = torch.zeros(sequences, dtype=dtype, device=masked.device).index_add(0, inverse, masked)
    counts = torch.zeros(sequences, dtype=dtype, device=masked.device).index_add(0, inverse, mask)
    means = sums / counts.clamp(min=1.0)
    denominator = (counts > 0).sum().clamp(min=1).to(dtype) if normalizer is None else normalizer
    return means.sum() / denominator


class _ReduceSum(torch.autograd.Function):
    """All-reduce (sum) in forward, identity in backward: every rank holds the same replicated loss."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:  # noqa: ANN001
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN205
        return grad, None


class _CopyToGroup(torch.autograd.Function):
    """Identity in forward, all-reduce (sum) of the gradient in backward (Megatron's copy-to-TP region)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:  # noqa: ANN001
        ctx.group = group
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN205
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    return torch.float64 if hidden.dtype == torch.float64 else torch.float32


def _logprobs_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    process_group,  # noqa: ANN001
    need_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probabilities and (when asked) entropies [N] from materialised logits
    (vocab-parallel with a group)."""
    dtype = _compute_dtype(hidden)
    targets = targets.long()
    if process_group is None:
        logits = (hidden.to(dtype) @ weight.to(dtype).T) / temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(1, targets[:, None]).squeeze(1)
        entropy = -(logp_all.exp() * logp_all).sum(-1) if need_entropy else None
        return logp, entropy
    rank = dist.get_rank(process_group)
    shard = weight.shape[0]
    start = rank * shard
    hidden = _CopyToGroup.apply(hidden, process_group)
    logits = (hidden.to(dtype) @ weight.to(dtype).T) / temperature
    global_max = logits.detach().max(dim=-1).values
    dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=process_group)
    shifted = logits - global_max[:, None]
    exp = shifted.exp()
    sum_exp = _ReduceSum.apply(exp.sum(-1), process_group)
    local = targets - start
    inside = (local >= 0) & (local < shard)
    target_local = shifted.gather(1, local.clamp(0, shard - 1)[:, None]).squeeze(1) * inside.to(dtype)
    target_shifted = _ReduceSum.apply(target_local, process_group)
    log_sum = sum_exp.log()
    if not need_entropy:
        return target_shifted - log_sum, None
    weighted = _ReduceSum.apply((exp * shifted).sum(-1), process_group)
    return target_shifted - log_sum, log_sum - weighted / sum_exp


def grpo_loss_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logprobs: torch.Tensor | None = None,
    rollout_logprobs: torch.Tensor | None = None,
    tis_cap: float | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    temperature: float = 1.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token_sum",
    normalizer: float | None = None,
    sequence_ids: torch.Tensor | None = None,
    return_entropy: bool = False,
    process_group=None,  # noqa: ANN001
) -> tuple[torch.Tensor, ...]:
    """GRPO loss from final hidden states [N, H] and output weight [V, H], in plain torch (the specification).

    logits = hidden @ weight.T / temperature in fp32 (float64 for float64 inputs). With `process_group`,
    `weight` is this rank's contiguous vocab shard (ids [rank * V/TP, (rank + 1) * V/TP)); max, sum-exp,
    target logit and entropy terms are reduced across the group, every rank gets the same loss, and the
    gradient of `hidden` is the full one (all-reduced), so pass the replicated hidden states directly.

    Per token: clipped surrogate with ratio exp(logp - old) (old: `old_logprobs`, else the detached current
    logprobs), times the detached truncated importance weight min(exp(old - rollout), tis_cap) when
    `rollout_logprobs` and `tis_cap` are given (on the policy term only, not the KL), plus
    kl_coef * k3(ref, logp) when `ref_logprobs` is given.

    Aggregation: "token_sum" = sum of masked per-token losses / normalizer (required: Dr. GRPO's constant);
    "token_mean" = sum / (normalizer or mask.sum()); "seq_mean" = sum over sequences (`sequence_ids` [N])
    of per-sequence token means / (normalizer or the number of sequences with a masked token). Give the
    global normalizer to share one denominator across micro-batches and data-parallel ranks.

    Returns (loss, logprobs) or (loss, logprobs, entropy) with `return_entropy`; logprobs and entropy
    are [N] in the compute dtype and stay attached to the graph (detach them for metrics).
    """
    options = {
        "old_logprobs": old_logprobs,
        "rollout_logprobs": rollout_logprobs,
        "ref_logprobs": ref_logprobs,
        "sequence_ids": sequence_ids,
    }
    _check_inputs(hidden, weight, targets, advantages, mask, options)
    if temperature <= 0:
        raise ValueError(f"grpo_loss: temperature must be > 0, got {temperature}")
    logp, entropy = _logprobs_reference(hidden, weight, targets, temperature, process_group, return_entropy)
    loss = policy_loss(
        logp,
        advantages,
        mask,
        tis_cap=tis_cap,
        kl_coef=kl_coef,
        clip_low=clip_low,
        clip_high=clip_high,
        aggregation=aggregation,
        normalizer=normalizer,
        **options,
    )
    return (loss, logp, entropy) if return_entropy else (loss, logp)


def grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    implementation: str = "auto",
    **options,
) -> tuple[torch.Tensor, ...]:
    """The GRPO loss for training backends: "fused" Triton kernel, "reference" torch, or "auto".

    "auto" is the reference on every device until the fused kernel has passed its GPU tests
    (tests/test_fused_grpo*.py, `-m gpu`) on the project's benchmark machine; it has not run on a GPU yet.
    Options and return values are those of `grpo_loss_reference`.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"grpo_loss: implementation {implementation!r} is not one of {IMPLEMENTATIONS}")
    if implementation == "auto":
        implementation = "reference"
    if implementation == "reference":
        return grpo_loss_reference(hidden, weight, targets, advantages, mask, **options)
    from spice.kernels import fused_grpo_loss

    return fused_grpo_loss(hidden, weight, targets, advantages, mask, **options)
