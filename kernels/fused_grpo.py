"""Fused linear + log-softmax GRPO loss in Triton: per-token logprobs and entropy without [N, V] logits.

Forward: one program per (token block, vocab split) multiplies hidden [BN, H] by weight tiles [BV, H]
with an fp32 accumulator and keeps an online log-sum-exp (running max m, sum a = sum e^(x-m), entropy
term b = sum e^(x-m)(x-m)) and the target logit. The partials of the vocab splits, and with a process
group of the vocab shards of the tensor-parallel ranks, are merged in torch (a few [N] vectors):
lse = M + log A, logprob = target - lse, entropy = log A - B / A.

Backward: the vocabulary is processed in slices; for each slice a kernel recomputes the logits tile by
tile and writes d loss / d logits (softmax minus one-hot, plus the entropy term, only when the entropy
is used: `set_materialize_grads(False)`) into an [N, slice] buffer; a Triton GEMM with an fp32
accumulator adds that slice's share to grad_hidden (fp32 [N, H], in place: each tile is added by its
one owner with a relaxed atomic add, deterministic, no temporaries) and another writes that slice of
grad_weight over all tokens. Peak extra memory is that buffer (`BACKWARD_CHUNK_BYTES`) plus [N, H] fp32,
never [N, V]; the weight is never copied (tiles are cast on load), so fp32 master weights with bf16
hidden states cost nothing extra.

Precision and tensor cores, per input dtype (all accumulation fp32):
- bf16: every GEMM on bf16 tensor cores; d logits stored in bf16 (fp32 range).
- fp16: forward and recompute on fp16 tensor cores (exact products); d logits kept fp32 (fp16 would
  underflow) and the two backward GEMMs run in TF32, which holds fp16 operands exactly and rounds only
  d logits to 10 mantissa bits.
- fp32: every GEMM in 3xTF32 (`input_precision="tf32x3"`): tensor cores at about fp32 accuracy.
- float64 inputs are computed in fp32.
A three-GEMM variant without the recompute is not offered: the GRPO gradient of each token (clipping,
TIS, aggregation) is known only in backward, so the forward cannot finish d logits.

The O(N) part (ratio, clipping, TIS, KL, aggregation) is `spice.grpo.policy_loss`, shared with the
reference, so both paths compute the same loss by construction.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
import triton

from spice.grpo import _check_inputs, grpo_loss_reference, policy_loss

from .fused_grpo_tiles import forward_partials_kernel, grad_logits_kernel, matmul_kernel

BACKWARD_CHUNK_BYTES = 1 << 30  # size of the [chunk, V] gradient buffer of the backward pass

_GPU_TILES = {"BLOCK_N": 128, "BLOCK_V": 128, "BLOCK_K": 64, "num_warps": 8}
_GPU_GEMM = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8}
_GPU_GROUP = {"logits": 16, "gemm": 8}  # token blocks that sweep the vocabulary together (L2 reuse)
_INTERPRETER_TILES = {"BLOCK_N": 16, "BLOCK_V": 16, "BLOCK_K": 16}
_INTERPRETER_GEMM = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}
_INTERPRETER_GROUP = {"logits": 2, "gemm": 2}  # small groups so that CI runs partial groups too
_DOT_PRECISION = {torch.bfloat16: "tf32", torch.float16: "tf32", torch.float32: "tf32x3"}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _launch_options(hidden: torch.Tensor) -> tuple[dict, dict, dict]:
    """Options of the logits tiles and of the backward GEMMs, and the group sizes, for hidden's device and dtype."""
    if hidden.device.type == "cpu":
        if not _interpreting():
            raise RuntimeError(
                "fused_grpo_loss: CPU tensors run only in triton's interpreter; set TRITON_INTERPRET=1 "
                "before importing spice.kernels, or use spice.grpo.grpo_loss_reference"
            )
        # the interpreter's bf16 tl.dot is wrong: upcast every operand to fp32 there
        common = {"UPCAST": True, "DOT_PRECISION": "ieee"}
        return {**_INTERPRETER_TILES, **common}, {**_INTERPRETER_GEMM, **common}, _INTERPRETER_GROUP
    common = {"UPCAST": False, "DOT_PRECISION": _DOT_PRECISION[hidden.dtype], "num_stages": 3}
    # fp32 (3xTF32) spills at BLOCK_K = 64 (sm_90 AOT compile); 32 keeps the 128 x 128 tiles spill-free
    k = {"BLOCK_K": 32} if hidden.dtype == torch.float32 else {}
    return {**_GPU_TILES, **k, **common}, {**_GPU_GEMM, **k, **common}, _GPU_GROUP


def _vocab_splits(n_tokens: int, vocab: int, hidden: torch.Tensor, block_n: int, block_v: int) -> int:
    """Programs per token block's vocabulary: enough to fill the GPU at small N, and enough that the
    hidden blocks in flight (about two programs per SM) fit in half of the L2 at large N."""
    tiles = triton.cdiv(vocab, block_v)
    if hidden.device.type == "cpu":
        return min(tiles, 2)
    props = torch.cuda.get_device_properties(hidden.device)
    in_flight = 2 * props.multi_processor_count
    fill = triton.cdiv(2 * in_flight, triton.cdiv(n_tokens, block_n))
    block_bytes = block_n * hidden.shape[1] * hidden.element_size()
    live_blocks = max(1, (getattr(props, "L2_cache_size", 50 << 20) // 2) // block_bytes)
    return max(1, min(tiles, max(fill, triton.cdiv(in_flight, live_blocks))))


def _on_device(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make tensor's GPU the current one while kernels launch (triton launches on the current device)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _merge(m: torch.Tensor, a: torch.Tensor, b: torch.Tensor, new_max: torch.Tensor):
    """Rescale partial sums (along dim 0) to a common maximum and add them."""
    scale = torch.exp(m - new_max)
    return (a * scale).sum(0), (scale * (b + a * (m - new_max))).sum(0)


def _matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, accumulate: bool, gemm: dict, group: int) -> None:
    """out (+)= a @ b (any strides) with an fp32 accumulator; b is cast to a's dtype tile by tile."""
    (m, r), k = a.shape, b.shape[1]
    grid = (triton.cdiv(m, gemm["BLOCK_M"]) * triton.cdiv(k, gemm["BLOCK_N"]),)
    matmul_kernel[grid](
        a, b, out, m, k, r, a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        ACCUMULATE=accumulate, GROUP=group, **gemm,
    )


class _FusedLogprobs(torch.autograd.Function):
    """(hidden [N, H], weight [V(/TP), H], targets [N]) -> (logprobs [N], entropy [N]) in fp32."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, group):  # noqa: ANN001, ANN205
        hidden = hidden.contiguous()
        weight = weight.contiguous()
        n, h = hidden.shape
        vocab = weight.shape[0]
        start = dist.get_rank(group) * vocab if group is not None else 0
        local = (targets.long() - start).contiguous()
        tiles, _, _ = _launch_options(hidden)
        splits = _vocab_splits(n, vocab, hidden, tiles["BLOCK_N"], tiles["BLOCK_V"])
        per_split = triton.cdiv(triton.cdiv(vocab, splits), tiles["BLOCK_V"]) * tiles["BLOCK_V"]
        splits = triton.cdiv(vocab, per_split)
        partial = torch.empty((4, splits, n), dtype=torch.float32, device=hidden.device)
        grid = (triton.cdiv(n, tiles["BLOCK_N"]) * splits,)
        forward_partials_kernel[grid](
            hidden, weight, local, partial[0], partial[1], partial[2], partial[3],
            n, vocab, h, hidden.stride(0), weight.stride(0), splits, per_split, per_split // tiles["BLOCK_V"],
            1.0 / temperature, **tiles,
        )
        m, a, b, t = partial
        top = m.max(0).values
        a, b = _merge(m, a, b, top)
        t = t.sum(0)
        if group is not None:
            global_top = top.clone()
            dist.all_reduce(global_top, op=dist.ReduceOp.MAX, group=group)
            a, b = _merge(top[None], a[None], b[None], global_top)
            sums = torch.stack([a, b, t])
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
            a, b, t = sums
            top = global_top
        log_a = torch.log(a)
        lse = top + log_a
        entropy = log_a - b / a
        ctx.save_for_backward(hidden, weight, local, lse, entropy)
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not zeros
        ctx.temperature = temperature
        ctx.group = group
        return t - lse, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):  # noqa: ANN001, ANN205
        hidden = ctx.saved_tensors[0]
        if grad_logp is None and grad_entropy is None:
            return None, None, None, None, None
        with _on_device(hidden):
            return _FusedLogprobs._backward(ctx, grad_logp, grad_entropy)

    @staticmethod
    def _backward(ctx, grad_logp, grad_entropy):  # noqa: ANN001, ANN205
        hidden, weight, local, lse, entropy = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n, h = hidden.shape
        vocab = weight.shape[0]
        tiles, gemm, groups = _launch_options(hidden)
        has_glogp, has_gent = grad_logp is not None, grad_entropy is not None
        grad_logp = grad_logp.float().contiguous() if has_glogp else lse
        grad_entropy = grad_entropy.float().contiguous() if has_gent else lse
        # d logits in bf16 for bf16 inputs (fp32 range), fp32 otherwise (fp16 would underflow)
        d_dtype = torch.bfloat16 if hidden.dtype == torch.bfloat16 else torch.float32
        chunk = BACKWARD_CHUNK_BYTES // (n * torch.finfo(d_dtype).bits // 8)
        chunk = min(vocab, max(tiles["BLOCK_V"], chunk // tiles["BLOCK_V"] * tiles["BLOCK_V"]))
        grad_hidden = torch.empty((n, h), dtype=torch.float32, device=hidden.device) if need_hidden else None
        grad_weight = torch.empty((vocab, h), dtype=weight.dtype, device=hidden.device) if need_weight else None
        buffer = torch.empty((n, chunk), dtype=d_dtype, device=hidden.device)
        for lo in range(0, vocab, chunk):
            hi = min(lo + chunk, vocab)
            d = buffer[:, : hi - lo]  # row stride stays `chunk`: aligned rows in the last slice too
            grid = (triton.cdiv(n, tiles["BLOCK_N"]) * triton.cdiv(hi - lo, tiles["BLOCK_V"]),)
            grad_logits_kernel[grid](
                hidden, weight[lo:hi], local - lo, lse, entropy, grad_logp, grad_entropy, d,
                n, hi - lo, h, hidden.stride(0), weight.stride(0), d.stride(0), 1.0 / ctx.temperature,
                HAS_GLOGP=has_glogp, HAS_GENT=has_gent, GROUP=groups["logits"], **tiles,
            )
            if need_hidden:
                _matmul(d, weight[lo:hi], grad_hidden, lo > 0, gemm, groups["gemm"])
            if need_weight:
                # one GEMM over all tokens per vocab slice, written in the weight's own dtype
                _matmul(d.T, hidden, grad_weight[lo:hi], False, gemm, groups["gemm"])
        if need_hidden and ctx.group is not None:
            dist.all_reduce(grad_hidden, op=dist.ReduceOp.SUM, group=ctx.group)
        return (
            grad_hidden.to(hidden.dtype) if need_hidden else None,
            grad_weight,
            None,
            None,
            None,
        )


def fused_grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    process_group=None,  # noqa: ANN001
    **options,
) -> tuple[torch.Tensor, ...]:
    """GRPO loss with the fused Triton kernel; same options and results as `spice.grpo.grpo_loss_reference`.

    Logprobs and entropy are fp32 [N] and attached to the graph (entropy is differentiable too). With
    `process_group`, `weight` is this rank's vocab shard and the gradient of `hidden` is the full one.
    The matmuls run in hidden's dtype (float64 in fp32); a weight of another dtype is cast tile by tile
    inside the kernels, never copied, and its gradient comes back in its own dtype.
    """
    _check_inputs(hidden, weight, targets, advantages, mask, options)
    if temperature <= 0:
        raise ValueError(f"grpo_loss: temperature must be > 0, got {temperature}")
    if hidden.shape[0] == 0:
        return grpo_loss_reference(
            hidden, weight, targets, advantages, mask, temperature=temperature,
            return_entropy=return_entropy, process_group=process_group, **options,
        )
    compute = hidden if hidden.dtype != torch.float64 else hidden.float()
    with _on_device(compute):
        logp, entropy = _FusedLogprobs.apply(compute, weight, targets, float(temperature), process_group)
    loss = policy_loss(logp, advantages, mask, **options)
    return (loss, logp, entropy) if return_entropy else (loss, logp)
