"""Triton tiles of the fused GRPO loss: the logits tile, the forward partials, d loss / d logits and the
fp32-accumulating GEMM of the backward. `fused_grpo.py` launches them; this file holds only kernels.

Tile order (L2 reuse on a GPU whose L2 is smaller than `hidden`): the forward's 1-D grid walks the vocab
splits of one token block before the next block (the split is the fastest-varying index), and the
backward kernels walk groups of GROUP token blocks across the vocabulary (Triton's grouped ordering), so
the programs in flight share a few hidden blocks and a few weight tiles.

Operands are cast to the compute dtype inside the tiles (the weight is never copied in its cast form);
with UPCAST (triton's interpreter, whose bf16 tl.dot is wrong) every operand goes to fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _grouped(pid, blocks_m, blocks_n, GROUP: tl.constexpr):
    """(row block, column block) of program pid when GROUP row blocks sweep the columns together."""
    per_group = GROUP * blocks_n
    first = (pid // per_group) * GROUP
    size = tl.minimum(blocks_m - first, GROUP)
    return first + (pid % per_group) % size, (pid % per_group) // size


@triton.jit
def _logits_tile(
    h_ptr, w_ptr, rows, cols, row_ok, col_ok, hidden_size, stride_h, stride_w, inv_temp,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """logits[rows, cols] / temperature in fp32 for one [BLOCK_N, BLOCK_V] tile (weight cast to hidden's dtype)."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    for k0 in range(0, hidden_size, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < hidden_size
        h = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :] * stride_w + ks[:, None], mask=col_ok[None, :] & k_ok[:, None], other=0.0)
        w = w.to(h_ptr.dtype.element_ty)
        if UPCAST:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, w, acc=acc, input_precision=DOT_PRECISION)
    return acc * inv_temp


@triton.jit
def forward_partials_kernel(
    h_ptr, w_ptr, t_ptr, m_ptr, a_ptr, b_ptr, tgt_ptr,
    n_tokens, vocab, hidden_size, stride_h, stride_w, splits, vocab_per_split, tiles_per_split, inv_temp,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Online log-sum-exp, entropy term and target logit of one token block over one vocab split."""
    pid = tl.program_id(0)
    split = pid % splits  # fastest-varying: programs in flight share their token block
    pid_n = pid // splits
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
def grad_logits_kernel(
    h_ptr, w_ptr, t_ptr, lse_ptr, ent_ptr, glogp_ptr, gent_ptr, d_ptr,
    n_tokens, vocab, hidden_size, stride_h, stride_w, stride_d, inv_temp,
    HAS_GLOGP: tl.constexpr, HAS_GENT: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """d loss / d raw logits for one [BLOCK_N, BLOCK_V] tile, recomputing the logits (grouped order)."""
    pid_n, pid_v = _grouped(tl.program_id(0), tl.cdiv(n_tokens, BLOCK_N), tl.cdiv(vocab, BLOCK_V), GROUP)
    rows = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    cols = (pid_v * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
    row_ok = rows < n_tokens
    col_ok = cols < vocab
    x = _logits_tile(
        h_ptr, w_ptr, rows, cols, row_ok, col_ok, hidden_size, stride_h, stride_w, inv_temp,
        BLOCK_N, BLOCK_V, BLOCK_K, UPCAST, DOT_PRECISION,
    )
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    logp = x - lse[:, None]
    p = tl.exp(logp)
    dx = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    if HAS_GLOGP:
        g = tl.load(glogp_ptr + rows, mask=row_ok, other=0.0)
        target = tl.load(t_ptr + rows, mask=row_ok, other=-1)
        dx += g[:, None] * (tl.where(cols[None, :] == target[:, None], 1.0, 0.0) - p)
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


@triton.jit
def matmul_kernel(
    a_ptr, b_ptr, c_ptr, M, K, R, stride_am, stride_ar, stride_br, stride_bk, stride_cm, stride_ck,
    ACCUMULATE: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """C[M, K] (+)= A[M, R] @ B[R, K] with an fp32 accumulator; B is cast to A's dtype, C keeps its own.

    With ACCUMULATE, C (fp32) is added to in place (grad_hidden over vocab slices, no temporaries)."""
    pid_m, pid_k = _grouped(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_N), GROUP)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rk = (pid_k * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    m_ok = rm < M
    k_ok = rk < K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_K):
        rr = (r0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        r_ok = rr < R
        a = tl.load(a_ptr + rm[:, None] * stride_am + rr[None, :] * stride_ar,
                    mask=m_ok[:, None] & r_ok[None, :], other=0.0)
        b = tl.load(b_ptr + rr[:, None] * stride_br + rk[None, :] * stride_bk,
                    mask=r_ok[:, None] & k_ok[None, :], other=0.0)
        b = b.to(a_ptr.dtype.element_ty)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc=acc, input_precision=DOT_PRECISION)
    c_ptrs = c_ptr + rm[:, None] * stride_cm + rk[None, :] * stride_ck
    c_ok = m_ok[:, None] & k_ok[None, :]
    if ACCUMULATE:
        # one program owns each element in a launch, so this fp32 add is as deterministic as load+store,
        # and no second [BLOCK_M, BLOCK_N] tile is live in the epilogue (that spills with triton 3.6)
        tl.atomic_add(c_ptrs, acc, mask=c_ok, sem="relaxed")
    else:
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_ok)
