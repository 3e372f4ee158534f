"""Fused linear + log-softmax GRPO loss in Triton: per-token logprobs and entropy without [N, V] logits.

Forward: one program per (token block, vocab split) multiplies hidden [BN, H] by weight tiles [BV, H]
in fp32 and keeps an online log-sum-exp (running max m, sum a = sum e^(x-m), entropy term
b = sum e^(x-m)(x-m)) and the target logit. The partials of the vocab splits, and with a process group
of the vocab shards of the tensor-parallel ranks, are merged in torch (a few [N] vectors):
lse = M + log A, logprob = target - lse, entropy = log A - B / A.

Backward: the vocabulary is processed in slices; for each slice a kernel recomputes the logits tile by
tile (fp32 accumulation) and writes d loss / d logits (softmax minus one-hot, plus the entropy term)
into an [N, slice] buffer; one GEMM gives that slice of grad_weight (over all tokens, so no [V, H] fp32
accumulator is needed) and another adds its share to grad_hidden (an fp32 [N, H] accumulator). Peak
extra memory is that buffer (`BACKWARD_CHUNK_BYTES`) plus [N, H] fp32, never [N, V].

The O(N) part (ratio, clipping, TIS, KL, aggregation) is `spice.grpo.policy_loss`, shared with the
reference, so both paths compute the same loss by construction.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
import triton
import triton.language as tl

from spice.grpo import _check_inputs, grpo_loss_reference, policy_loss

BACKWARD_CHUNK_BYTES = 1 << 30  # size of the [chunk, V] gradient buffer of the backward pass

_GPU_BLOCKS = {"BLOCK_N": 128, "BLOCK_V": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}
_INTERPRETER_BLOCKS = {"BLOCK_N": 16, "BLOCK_V": 16, "BLOCK_K": 16}


@triton.jit
def _logits_tile(
    h_ptr, w_ptr, rows, cols, row_ok, col_ok, hidden_size, stride_h, stride_w, inv_temp,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """logits[rows, cols] / temperature in fp32 for one [BLOCK_N, BLOCK_V] tile."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    for k0 in range(0, hidden_size, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < hidden_size
        h = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :] * stride_w + ks[:, None], mask=col_ok[None, :] & k_ok[:, None], other=0.0)
        if UPCAST:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, w, acc=acc, input_precision=DOT_PRECISION)
    return acc * inv_temp


@triton.jit
def _forward_partials_kernel(
    h_ptr, w_ptr, t_ptr, m_ptr, a_ptr, b_ptr, tgt_ptr,
    n_tokens, vocab, hidden_size, stride_h, stride_w, vocab_per_split, tiles_per_split, inv_temp,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Online log-sum-exp, entropy term and target logit of one token block over one vocab split."""
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    rows = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_ok = rows < n_tokens
    target = tl.load(t_ptr + rows, mask=row_ok, other=-1)
    v_start = split * vocab_per_split
    v_end = tl.minimum(v_start + vocab_per_split, vocab)
    m = tl.full((BLOCK_N,), -1e30, dtype=tl.float32)
    a = tl.zeros((BLOCK_N,), dtype=tl.float32)
    b = tl.zeros((BLOCK_N,), dtype=tl.float32)
    t = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for tile in range(0, tiles_per_split):
        cols = (v_start + tile * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
        col_ok = cols < v_end
        x = _logits_tile(
            h_ptr, w_ptr, rows, cols, row_ok, col_ok, hidden_size, stride_h, stride_w, inv_temp,
            BLOCK_N, BLOCK_V, BLOCK_K, UPCAST, DOT_PRECISION,
        )
        x = tl.where(col_ok[None, :], x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=1))
        alpha = tl.exp(m - m_new)
        e = tl.exp(x - m_new[:, None])
        d = tl.where(col_ok[None, :], x - m_new[:, None], 0.0)
        b = alpha * (b + a * (m - m_new)) + tl.sum(e * d, axis=1)
        a = alpha * a + tl.sum(e, axis=1)
        m = m_new
        hit = (cols[None, :] == target[:, None]) & col_ok[None, :]
        t += tl.sum(tl.where(hit, x, 0.0), axis=1)
    out = split * n_tokens + rows
    tl.store(m_ptr + out, m, mask=row_ok)
    tl.store(a_ptr + out, a, mask=row_ok)
    tl.store(b_ptr + out, b, mask=row_ok)
    tl.store(tgt_ptr + out, t, mask=row_ok)


@triton.jit
def _grad_logits_kernel(
    h_ptr, w_ptr, t_ptr, lse_ptr, ent_ptr, glogp_ptr, gent_ptr, d_ptr,
    n_tokens, vocab, hidden_size, stride_h, stride_w, stride_d, inv_temp,
    HAS_GENT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """d loss / d raw logits for one [BLOCK_N, BLOCK_V] tile, recomputing the logits."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    cols = (tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
    row_ok = rows < n_tokens
    col_ok = cols < vocab
    x = _logits_tile(
        h_ptr, w_ptr, rows, cols, row_ok, col_ok, hidden_size, stride_h, stride_w, inv_temp,
        BLOCK_N, BLOCK_V, BLOCK_K, UPCAST, DOT_PRECISION,
    )
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    g = tl.load(glogp_ptr + rows, mask=row_ok, other=0.0)
    target = tl.load(t_ptr + rows, mask=row_ok, other=-1)
    logp = x - lse[:, None]
    p = tl.exp(logp)
    dx = g[:, None] * (tl.where(cols[None, :] == target[:, None], 1.0, 0.0) - p)
    if HAS_GENT:
        ent = tl.load(ent_ptr + rows, mask=row_ok, other=0.0)
        ge = tl.load(gent_ptr + rows, mask=row_ok, other=0.0)
        dx -= ge[:, None] * p * (logp + ent[:, None])
    dz = dx * inv_temp
    tl.store(
        d_ptr + rows[:, None] * stride_d + cols[None, :],
        dz.to(d_ptr.dtype.element_ty),
        mask=row_ok[:, None] & col_ok[None, :],
    )


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _launch_options(hidden: torch.Tensor) -> dict:
    """Block sizes and dot precision: small fp32 tiles in the interpreter, tensor-core tiles on CUDA."""
    fp32 = hidden.dtype == torch.float32
    if hidden.device.type == "cpu":
        if not _interpreting():
            raise RuntimeError(
                "fused_grpo_loss: CPU tensors run only in triton's interpreter; set TRITON_INTERPRET=1 "
                "before importing spice.kernels, or use spice.grpo.grpo_loss_reference"
            )
        # the interpreter's bf16 tl.dot is wrong: upcast every operand to fp32 there
        return {**_INTERPRETER_BLOCKS, "UPCAST": True, "DOT_PRECISION": "ieee"}
    stages = 2 if fp32 else _GPU_BLOCKS["num_stages"]  # fp32 tiles take twice the shared memory
    return {**_GPU_BLOCKS, "num_stages": stages, "UPCAST": False, "DOT_PRECISION": "ieee" if fp32 else "tf32"}


def _vocab_splits(n_tokens: int, vocab: int, hidden: torch.Tensor, block_n: int, block_v: int) -> int:
    """How many programs share one token block's vocabulary: enough to fill the GPU at small N."""
    tiles = triton.cdiv(vocab, block_v)
    if hidden.device.type == "cpu":
        return min(tiles, 2)
    sms = torch.cuda.get_device_properties(hidden.device).multi_processor_count
    return max(1, min(tiles, triton.cdiv(4 * sms, triton.cdiv(n_tokens, block_n))))


def _on_device(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make tensor's GPU the current one while kernels launch (triton launches on the current device)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _merge(m: torch.Tensor, a: torch.Tensor, b: torch.Tensor, new_max: torch.Tensor):
    """Rescale partial sums (along dim 0) to a common maximum and add them."""
    scale = torch.exp(m - new_max)
    return (a * scale).sum(0), (scale * (b + a * (m - new_max))).sum(0)


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
        opts = _launch_options(hidden)
        splits = _vocab_splits(n, vocab, hidden, opts["BLOCK_N"], opts["BLOCK_V"])
        per_split = triton.cdiv(triton.cdiv(vocab, splits), opts["BLOCK_V"]) * opts["BLOCK_V"]
        splits = triton.cdiv(vocab, per_split)
        partial = torch.empty((4, splits, n), dtype=torch.float32, device=hidden.device)
        grid = (triton.cdiv(n, opts["BLOCK_N"]), splits)
        _forward_partials_kernel[grid](
            hidden, weight, local, partial[0], partial[1], partial[2], partial[3],
            n, vocab, h, hidden.stride(0), weight.stride(0), per_split, per_split // opts["BLOCK_V"],
            1.0 / temperature, **opts,
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
        ctx.temperature = temperature
        ctx.group = group
        return t - lse, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):  # noqa: ANN001, ANN205
        hidden = ctx.saved_tensors[0]
        with _on_device(hidden):
            return _FusedLogprobs._backward(ctx, grad_logp, grad_entropy)

    @staticmethod
    def _backward(ctx, grad_logp, grad_entropy):  # noqa: ANN001, ANN205
        hidden, weight, local, lse, entropy = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n, h = hidden.shape
        vocab = weight.shape[0]
        opts = _launch_options(hidden)
        grad_logp = torch.zeros_like(lse) if grad_logp is None else grad_logp.float().contiguous()
        has_gent = grad_entropy is not None
        grad_entropy = grad_entropy.float().contiguous() if has_gent else grad_logp
        # d logits in bf16 for bf16 inputs (fp32 range), fp32 otherwise (fp16 would underflow)
        d_dtype = torch.bfloat16 if hidden.dtype == torch.bfloat16 else torch.float32
        chunk = BACKWARD_CHUNK_BYTES // (n * torch.finfo(d_dtype).bits // 8)
        chunk = min(vocab, max(opts["BLOCK_V"], chunk // opts["BLOCK_V"] * opts["BLOCK_V"]))
        grad_hidden = torch.zeros((n, h), dtype=torch.float32, device=hidden.device) if need_hidden else None
        grad_weight = torch.empty((vocab, h), dtype=weight.dtype, device=hidden.device) if need_weight else None
        mm_hidden = hidden.to(d_dtype)
        buffer = torch.empty(n * chunk, dtype=d_dtype, device=hidden.device)
        for lo in range(0, vocab, chunk):
            hi = min(lo + chunk, vocab)
            d = buffer[: n * (hi - lo)].view(n, hi - lo)
            grid = (triton.cdiv(n, opts["BLOCK_N"]), triton.cdiv(hi - lo, opts["BLOCK_V"]))
            _grad_logits_kernel[grid](
                hidden, weight[lo:hi], local - lo, lse, entropy, grad_logp, grad_entropy, d,
                n, hi - lo, h, hidden.stride(0), weight.stride(0), d.stride(0),
                1.0 / ctx.temperature, HAS_GENT=has_gent, **opts,
            )
            if need_hidden:
                grad_hidden += d @ weight[lo:hi].to(d_dtype)
            if need_weight:
                # one GEMM over all tokens per vocab slice: accumulated in fp32 inside the GEMM
                if grad_weight.dtype == d_dtype:
                    torch.mm(d.T, mm_hidden, out=grad_weight[lo:hi])
                else:
                    grad_weight[lo:hi] = d.T @ mm_hidden
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
    The matmuls run in hidden's dtype (weight is cast to it if it differs; float64 runs in fp32).
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
    w = weight if weight.dtype == compute.dtype else weight.to(compute.dtype)
    with _on_device(compute):
        logp, entropy = _FusedLogprobs.apply(compute, w, targets, float(temperature), process_group)
    loss = policy_loss(logp, advantages, mask, **options)
    return (loss, logp, entropy) if return_entropy else (loss, logp)
