"""Triton backward of jagged HSTU attention: dq, dk, dv and the rab weight gradients.

With s = alpha q k^T + rab, p = silu(s) (causal-masked) and out = p v / n:

    dv = p^T dout / n      dp = dout v^T      ds = dp * silu'(s),  silu'(s) = sig + p (1 - sig)
    dk = alpha ds^T q / n  dq = alpha ds k / n
    d_pos[j - i + N - 1] += ds / n,  d_ts[bucket(ts[i+1] - ts[j])] += ds / n  (summed over heads)

Two kernels, both recomputing s and p tile by tile (nothing of size [n, n] is stored; the forward
saves nothing but its inputs):

- `_dkdv_kernel`: one program per (key block, sequence, head) over the query blocks at or after
  it; dk, dv in registers, plain stores.
- `_dq_kernel`: one program per (query block, sequence, head) over the key blocks up to the
  diagonal; dq in registers, plus the rab gradients. A second pass recomputes s once more, but
  dq atomics from `_dkdv_kernel` would be T * D float atomics per tile, and walking each query
  row in order is what lets the positional reduction below carry sums between tiles.

Rab gradients (float32 atomics into [2N-1] / [num_buckets+1] buffers; summation order, hence
the last bits, vary run to run):
- positional: each tile's diagonal sums. `tl.gather` rotates row ii of the (square) tile left by
  ii, so column c holds the pairs with j - i = c (unwrapped) or c - BLOCK (wrapped). The wrapped
  part of key block n and the unwrapped part of block n - 1 land on the same BLOCK weights, so
  they are summed in registers and flushed with one BLOCK-wide atomic per tile instead of BLOCK^2
  scattered ones. Still the costliest part of the bias backward (see benchmarks/attention.py).
- time: the buckets of a tile span a short range away from the diagonal (gaps grow slowly in log
  space), so the tile loops over [min, max] bucket with one masked sum and one scalar atomic each.
  Unsorted timestamps give the same (exact) result, only slower.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.hstu_attention.triton_common import (
    INTERPRET, add_rab, as_triton_configs, block_d, check_inputs, dot_precision, fast_math,
    last_dim_contiguous, pad_head_dim, query_times, rab_args, sigmoid, split_time, tune_key_len,
)


# Autotune candidates as launch kwargs (tests run each one explicitly through the *_config args).
# The dq kernel's tiles are square: the diagonal-sum rotation of the positional gradient needs it.
if INTERPRET:
    # BLOCK_N != BLOCK_M so the interpreter tests cover the non-square causal bookkeeping.
    DKDV_CONFIGS = [dict(BLOCK_N=32, BLOCK_M=16, num_warps=4, num_stages=1)]
    DQ_CONFIGS = [dict(BLOCK=32, num_warps=4, num_stages=1)]
else:
    DKDV_CONFIGS = [
        dict(BLOCK_N=64, BLOCK_M=64, num_warps=4, num_stages=2),
        dict(BLOCK_N=64, BLOCK_M=64, num_warps=4, num_stages=3),
        dict(BLOCK_N=128, BLOCK_M=64, num_warps=8, num_stages=2),
        dict(BLOCK_N=128, BLOCK_M=32, num_warps=8, num_stages=3),
        dict(BLOCK_N=64, BLOCK_M=32, num_warps=4, num_stages=3),
    ]
    DQ_CONFIGS = [
        dict(BLOCK=64, num_warps=4, num_stages=2),
        dict(BLOCK=64, num_warps=4, num_stages=3),
        dict(BLOCK=64, num_warps=8, num_stages=2),
        dict(BLOCK=128, num_warps=8, num_stages=2),
        dict(BLOCK=32, num_warps=4, num_stages=3),
    ]


@triton.jit
def _dkdv_tile(
    dk, dv, k, v, offs_n, tk_hi, tk_lo, ts_base, m_start, seq_len,
    Q, DO, TS, REQ_TS, POS_W, TS_W, THR,
    stride_qt, stride_dot, alpha, max_seq_len, num_buckets,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    MASKED: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, FAST_MATH: tl.constexpr,
):
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    # The last query block may run past the sequence in either loop. Zero dout there is what
    # keeps padded rows out of dv and dk (their p is not zero, their dp is).
    m_ok = offs_m < seq_len
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_dqk[None, :],
                mask=m_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_dot + offs_dv[None, :],
                 mask=m_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)
    # Transposed tile [keys, queries], so dk and dv come out of plain (not transposed) dots.
    s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * alpha
    if HAS_TS:
        # Next-event rule as in the forward: ts[i + 1], the request time for the last query.
        tq_hi, tq_lo = split_time(query_times(TS, REQ_TS, offs_m, seq_len), ts_base)
        dt_hi = tq_hi[None, :] - tk_hi[:, None]
        dt_lo = tq_lo[None, :] - tk_lo[:, None]
    else:
        dt_hi = 0.0
        dt_lo = 0.0
    s_t, _ = add_rab(s_t, offs_n[:, None] - offs_m[None, :], dt_hi, dt_lo, POS_W, TS_W, THR,
                     max_seq_len, num_buckets, HAS_POS, HAS_TS)
    sig = sigmoid(s_t, FAST_MATH)
    p_t = s_t * sig
    dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
    ds_t = dp_t * (sig + p_t * (1.0 - sig))
    if MASKED:
        causal = offs_n[:, None] <= offs_m[None, :]
        p_t = tl.where(causal, p_t, 0.0)
        ds_t = tl.where(causal, ds_t, 0.0)
    dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
    dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def _dkdv_kernel(
    Q, K, V, DO, DK, DV, SEQ_OFFSETS, TS, REQ_TS, POS_W, TS_W, THR,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh,
    H, max_seq_len, num_buckets, alpha, tune_len,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    NORM_MAX_LEN: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr, DOT_PRECISION: tl.constexpr, FAST_MATH: tl.constexpr,
):
    pid = tl.program_id(0)
    num_n_blocks = tl.cdiv(max_seq_len, BLOCK_N)
    bh = pid // num_n_blocks
    n_block = pid % num_n_blocks  # the first key blocks see the most queries: launch them first
    b = bh // H
    h = bh % H
    seq_start = tl.load(SEQ_OFFSETS + b).to(tl.int64)
    seq_len = (tl.load(SEQ_OFFSETS + b + 1) - seq_start).to(tl.int32)
    n_start = n_block * BLOCK_N
    if n_start >= seq_len:
        return

    Q += seq_start * stride_qt + h * stride_qh
    K += seq_start * stride_kt + h * stride_kh
    V += seq_start * stride_vt + h * stride_vh
    DO += seq_start * stride_dot + h * stride_doh
    DK += seq_start * stride_dkt + h * stride_dkh
    DV += seq_start * stride_dvt + h * stride_dvh
    TS += seq_start
    REQ_TS += b
    # Timestamps are rebased to the sequence's first event before splitting (see split_time).
    if HAS_TS:
        ts_base = tl.load(TS)
    else:
        ts_base = 0

    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    n_ok = offs_n < seq_len
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_dqk[None, :],
                mask=n_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_dv[None, :],
                mask=n_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)
    if HAS_TS:
        tk_hi, tk_lo = split_time(tl.load(TS + offs_n, mask=n_ok, other=0), ts_base)
    else:
        tk_hi = 0.0  # unused
        tk_lo = 0.0

    dk = tl.zeros((BLOCK_N, BLOCK_DQK), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32)
    m_first = (n_start // BLOCK_M) * BLOCK_M
    # Query blocks starting at or after the block's last key + 1 see every key: no causal mask.
    m_full = tl.minimum(tl.cdiv(n_start + BLOCK_N, BLOCK_M) * BLOCK_M, seq_len)
    for m_start in range(m_first, m_full, BLOCK_M):
        dk, dv = _dkdv_tile(dk, dv, k, v, offs_n, tk_hi, tk_lo, ts_base, m_start, seq_len,
                            Q, DO, TS, REQ_TS, POS_W, TS_W, THR,
                            stride_qt, stride_dot, alpha, max_seq_len, num_buckets, D_QK, D_V,
                            True, HAS_POS, HAS_TS, BLOCK_M, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
    for m_start in range(m_full, seq_len, BLOCK_M):
        dk, dv = _dkdv_tile(dk, dv, k, v, offs_n, tk_hi, tk_lo, ts_base, m_start, seq_len,
                            Q, DO, TS, REQ_TS, POS_W, TS_W, THR,
                            stride_qt, stride_dot, alpha, max_seq_len, num_buckets, D_QK, D_V,
                            False, HAS_POS, HAS_TS, BLOCK_M, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)

    if NORM_MAX_LEN:
        inv_n = 1.0 / max_seq_len
    else:
        inv_n = 1.0 / seq_len
    tl.store(DK + offs_n[:, None] * stride_dkt + offs_dqk[None, :], (dk * (alpha * inv_n)).to(DK.dtype.element_ty),
             mask=n_ok[:, None] & (offs_dqk[None, :] < D_QK))
    tl.store(DV + offs_n[:, None] * stride_dvt + offs_dv[None, :], (dv * inv_n).to(DV.dtype.element_ty),
             mask=n_ok[:, None] & (offs_dv[None, :] < D_V))


@triton.jit
def _dq_tile(
    dq, carry, q, do, offs_m, tq_hi, tq_lo, ts_base, n_start, m_start, seq_len, inv_n,
    K, V, TS, POS_W, TS_W, THR, DPOS, DTS,
    stride_kt, stride_vt, alpha, max_seq_len, num_buckets,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    MASKED: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, FAST_MATH: tl.constexpr,
):
    offs_n = n_start + tl.arange(0, BLOCK)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    if MASKED:
        n_ok = offs_n < seq_len
    else:
        n_ok = tl.full((BLOCK,), 1, tl.int1)
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_dqk[None, :],
                mask=n_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_dv[None, :],
                mask=n_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * alpha
    if HAS_TS:
        tk_hi, tk_lo = split_time(tl.load(TS + offs_n, mask=n_ok, other=0), ts_base)
        dt_hi = tq_hi[:, None] - tk_hi[None, :]
        dt_lo = tq_lo[:, None] - tk_lo[None, :]
    else:
        dt_hi = 0.0
        dt_lo = 0.0
    s, bucket = add_rab(s, offs_n[None, :] - offs_m[:, None], dt_hi, dt_lo, POS_W, TS_W, THR,
                        max_seq_len, num_buckets, HAS_POS, HAS_TS)
    sig = sigmoid(s, FAST_MATH)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    ds = dp * (sig + s * sig * (1.0 - sig))
    if MASKED:
        # Padded rows already have ds = 0 (their dout is zero); this is the causal cut.
        causal = offs_n[None, :] <= offs_m[:, None]
        ds = tl.where(causal, ds, 0.0)
    dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)

    if HAS_POS:
        rows = tl.arange(0, BLOCK)[:, None]
        cols = tl.arange(0, BLOCK)[None, :]
        wrapped = rows + cols >= BLOCK
        # rotated[ii, c] = ds[ii, (ii + c) mod BLOCK]: j - i = c, or c - BLOCK where wrapped.
        rotated = tl.gather(ds, (rows + cols) & (BLOCK - 1), axis=1)
        low = tl.where(wrapped, rotated, 0.0)
        # carry holds the unwrapped part of the previous key block: same BLOCK weights as `low`.
        idx = n_start - m_start + max_seq_len - 1 - BLOCK + tl.arange(0, BLOCK)
        tl.atomic_add(DPOS + idx, tl.sum(carry + low, axis=0) * inv_n,
                      mask=(idx >= 0) & (idx < 2 * max_seq_len - 1), sem="relaxed")
        carry = rotated - low
    if HAS_TS:
        if MASKED:
            valid = (offs_n[None, :] <= offs_m[:, None]) & (offs_m[:, None] < seq_len)
            lo = tl.min(tl.where(valid, bucket, num_buckets))
            hi = tl.max(tl.where(valid, bucket, 0))
        else:
            # Padded rows read the request time, so their buckets are those of the last real
            # row: they cannot widen the range.
            lo = tl.min(bucket)
            hi = tl.max(bucket)
        for kb in range(lo, hi + 1):
            total = tl.sum(tl.where(bucket == kb, ds, 0.0))
            tl.atomic_add(DTS + kb, total * inv_n, sem="relaxed")
    return dq, carry


@triton.jit
def _dq_kernel(
    Q, K, V, DO, DQ, SEQ_OFFSETS, TS, REQ_TS, POS_W, TS_W, THR, DPOS, DTS,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dqt, stride_dqh,
    H, max_seq_len, num_buckets, alpha, tune_len,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    NORM_MAX_LEN: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, FAST_MATH: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m_blocks = tl.cdiv(max_seq_len, BLOCK)
    bh = pid // num_m_blocks
    m_block = num_m_blocks - 1 - pid % num_m_blocks  # heaviest (last) query blocks first
    b = bh // H
    h = bh % H
    seq_start = tl.load(SEQ_OFFSETS + b).to(tl.int64)
    seq_len = (tl.load(SEQ_OFFSETS + b + 1) - seq_start).to(tl.int32)
    m_start = m_block * BLOCK
    if m_start >= seq_len:
        return

    Q += seq_start * stride_qt + h * stride_qh
    K += seq_start * stride_kt + h * stride_kh
    V += seq_start * stride_vt + h * stride_vh
    DO += seq_start * stride_dot + h * stride_doh
    DQ += seq_start * stride_dqt + h * stride_dqh
    TS += seq_start
    REQ_TS += b
    # Timestamps are rebased to the sequence's first event before splitting (see split_time).
    if HAS_TS:
        ts_base = tl.load(TS)
    else:
        ts_base = 0

    offs_m = m_start + tl.arange(0, BLOCK)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < seq_len
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_dqk[None, :],
                mask=m_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_dot + offs_dv[None, :],
                 mask=m_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)
    if HAS_TS:
        tq_hi, tq_lo = split_time(query_times(TS, REQ_TS, offs_m, seq_len), ts_base)
    else:
        tq_hi = 0.0  # unused
        tq_lo = 0.0
    if NORM_MAX_LEN:
        inv_n = 1.0 / max_seq_len
    else:
        inv_n = 1.0 / seq_len

    dq = tl.zeros((BLOCK, BLOCK_DQK), dtype=tl.float32)
    carry = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for n_start in range(0, m_start, BLOCK):
        dq, carry = _dq_tile(dq, carry, q, do, offs_m, tq_hi, tq_lo, ts_base, n_start, m_start, seq_len, inv_n,
                             K, V, TS, POS_W, TS_W, THR, DPOS, DTS, stride_kt, stride_vt, alpha,
                             max_seq_len, num_buckets, D_QK, D_V, False, HAS_POS, HAS_TS,
                             BLOCK, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
    dq, carry = _dq_tile(dq, carry, q, do, offs_m, tq_hi, tq_lo, ts_base, m_start, m_start, seq_len, inv_n,
                         K, V, TS, POS_W, TS_W, THR, DPOS, DTS, stride_kt, stride_vt, alpha,
                         max_seq_len, num_buckets, D_QK, D_V, True, HAS_POS, HAS_TS,
                         BLOCK, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
    if HAS_POS:
        # The diagonal block's unwrapped part: offsets j - i = 0 .. BLOCK-1 (only 0 is nonzero).
        idx = max_seq_len - 1 + tl.arange(0, BLOCK)
        tl.atomic_add(DPOS + idx, tl.sum(carry, axis=0) * inv_n, mask=idx < 2 * max_seq_len - 1, sem="relaxed")

    tl.store(DQ + offs_m[:, None] * stride_dqt + offs_dqk[None, :], (dq * (alpha * inv_n)).to(DQ.dtype.element_ty),
             mask=m_ok[:, None] & (offs_dqk[None, :] < D_QK))


_TUNE_KEY = ["tune_len", "BLOCK_DQK", "BLOCK_DV", "HAS_POS", "HAS_TS", "DOT_PRECISION"]
_dkdv_tuned = triton.autotune(configs=as_triton_configs(DKDV_CONFIGS), key=_TUNE_KEY)(_dkdv_kernel)
# The autotuner replays the kernel while timing it; the atomics must start from zero each time.
_dq_tuned = triton.autotune(configs=as_triton_configs(DQ_CONFIGS), key=_TUNE_KEY,
                            reset_to_zero=["DPOS", "DTS"])(_dq_kernel)


def hstu_attention_bwd_triton(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    norm: str,
    timestamps: torch.Tensor | None,
    pos_weights: torch.Tensor | None,
    ts_weights: torch.Tensor | None,
    *,
    request_timestamps: torch.Tensor | None = None,
    dkdv_config: dict[str, int] | None = None,
    dq_config: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(dq, dk, dv, d_pos_weights, d_ts_weights) for dout: [T, H, Dv]; None for absent weights.

    The *_config arguments (block sizes, num_warps, num_stages) bypass the autotuner (tests).
    """
    check_inputs(q, k, v, seq_offsets, max_seq_len, norm, timestamps, pos_weights, ts_weights, request_timestamps)
    if dout.shape != v.shape:
        raise ValueError(f"dout must have v's shape {tuple(v.shape)}, got {tuple(dout.shape)}")
    dqk_out, dv_out = q.shape[2], v.shape[2]
    dout = dout.to(v.dtype)
    q, k, v, dout = (last_dim_contiguous(pad_head_dim(x)) for x in (q, k, v, dout))
    num_tokens, num_heads, dqk = q.shape
    dvd = v.shape[2]
    num_seqs = seq_offsets.numel() - 1
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    # float32 accumulators for the atomics; cast to the weights' dtype at the end.
    d_pos = q.new_zeros(pos_weights.shape if pos_weights is not None else (1,), dtype=torch.float32)
    d_ts = q.new_zeros(ts_weights.shape if ts_weights is not None else (1,), dtype=torch.float32)

    if num_tokens > 0 and num_seqs > 0:
        ts, req_ts, pos_w, ts_w, thr, num_buckets = rab_args(
            q, seq_offsets, timestamps, request_timestamps, pos_weights, ts_weights
        )
        common = (num_heads, max_seq_len, num_buckets, float(alpha), tune_key_len(max_seq_len), dqk, dvd)
        meta = dict(
            NORM_MAX_LEN=norm == "max_len", HAS_POS=pos_weights is not None, HAS_TS=ts_weights is not None,
            BLOCK_DQK=block_d(dqk), BLOCK_DV=block_d(dvd),
            DOT_PRECISION=dot_precision(q.dtype), FAST_MATH=fast_math(q.dtype),
        )
        in_strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                      dout.stride(0), dout.stride(1))

        dkdv_args = (q, k, v, dout, dk, dv, seq_offsets, ts, req_ts, pos_w, ts_w, thr, *in_strides,
                     dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1), *common)
        dq_args = (q, k, v, dout, dq, seq_offsets, ts, req_ts, pos_w, ts_w, thr, d_pos, d_ts, *in_strides,
                   dq.stride(0), dq.stride(1), *common)
        # One program per (block, sequence, head); blocks counted over max_seq_len (no host sync).
        for tuned, kernel, block, args, config in ((_dkdv_tuned, _dkdv_kernel, "BLOCK_N", dkdv_args, dkdv_config),
                                                   (_dq_tuned, _dq_kernel, "BLOCK", dq_args, dq_config)):
            def grid(cfg: dict, block: str = block) -> tuple[int]:
                return (triton.cdiv(max_seq_len, cfg[block]) * num_seqs * num_heads,)

            if config is None:
                tuned[grid](*args, **meta)
            else:
                kernel[grid(config)](*args, **meta, **config)
    else:
        dq.zero_(), dk.zero_(), dv.zero_()

    if dq.shape[2] != dqk_out:
        dq, dk = dq[..., :dqk_out].contiguous(), dk[..., :dqk_out].contiguous()
    if dv.shape[2] != dv_out:
        dv = dv[..., :dv_out].contiguous()
    d_pos_w = d_pos.to(pos_weights.dtype) if pos_weights is not None else None
    d_ts_w = d_ts.to(ts_weights.dtype) if ts_weights is not None else None
    return dq, dk, dv, d_pos_w, d_ts_w


__all__ = ["DKDV_CONFIGS", "DQ_CONFIGS", "hstu_attention_bwd_triton"]
