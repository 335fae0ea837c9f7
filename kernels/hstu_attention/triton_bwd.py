"""Triton backward of jagged HSTU attention: dq, dk, dv, and (through `triton_rab_grad`) the rab
weight gradients.

With s = alpha q k^T + rab, p = silu(s) (causal-masked) and out = p v / n:

    dv = p^T dout / n      dp = dout v^T      ds = dp * silu'(s),  silu'(s) = sig + p (1 - sig)
    dk = alpha ds^T q / n  dq = alpha ds k / n
    d_pos[j - i + N - 1] += ds / n,  d_ts[bucket(ts[i+1] - ts[j])] += ds / n  (summed over heads)

Three kernels, each recomputing s and p tile by tile (nothing of size [n, n] is stored; the
forward saves nothing but its inputs):

- `_dkdv_kernel`: one program per (key block, sequence, head) over the query blocks at or after
  it; dk, dv in registers, plain stores.
- `_dq_kernel`: one program per (query block, sequence, head) over the key blocks up to the
  diagonal; dq in registers. A second pass recomputes s once more, but dq atomics from
  `_dkdv_kernel` would be T * D float atomics per tile.
- `triton_rab_grad`: one program per (sequence, distance from the diagonal, chunk of tiles) with the heads
  inside, for the weight gradients, which need dS only summed over heads: their reductions run
  once per tile or program, not once per tile and head.

The bias of a tile is computed as in the forward (`triton_fwd`): by loads and selects from the
tables of `rab_tables` when timestamps are sorted (far tiles with few edges in the main loop;
diagonal tiles, and many-edge ones near them, from the band; other many-edge tiles in a loop of
their own), per logit otherwise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.hstu_attention.triton_common import (
    BACKWARD_TUNE_KEY, BAND_TOKEN, DIAGONAL_TILE, FAR_TILE, INTERPRET, MANY_EDGE_TILE, as_triton_configs,
    band_query_end, block_d, check_inputs, dot_precision, exact_rab, exact_row_times, fast_math, first_band_block,
    last_dim_contiguous, logit_scale, pad_head_dim, position_bias, rab_args, scaled_logits, silu_and_grad,
    silu_grad, spans_many_edges, tile_time_range, tune_key_len, unless_many_edges,
)
from kernels.hstu_attention.rab_tables import rab_tables
from kernels.hstu_attention.triton_rab_grad import rab_weight_gradients


# Autotune candidates as launch kwargs (tests run each one explicitly through the *_config args).
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
        # With the bias the one above takes 222-228 registers (8 warps an SM, the bias-free
        # kernel 12); capped at 168 it keeps 12, for 136-160 bytes of spills outside its far loop
        # and 1-2 more instructions per logit (benchmarks/kernel_static.py --all-configs).
        dict(BLOCK_N=64, BLOCK_M=32, num_warps=4, num_stages=3, maxnreg=168),
    ]
    DQ_CONFIGS = [
        dict(BLOCK=64, num_warps=4, num_stages=2),
        dict(BLOCK=64, num_warps=4, num_stages=3),
        dict(BLOCK=64, num_warps=8, num_stages=2),
        dict(BLOCK=128, num_warps=8, num_stages=2),
        dict(BLOCK=32, num_warps=4, num_stages=3),
        # The fast-bias dq kernel takes 216-244 registers, so an SM holds 2 of its 4-warp blocks
        # (the bias-free one 4); capped at 168, 3 fit, for 240-320 bytes of spills, at most 3 local
        # accesses in its far loop and ~10% more instructions per logit (`benchmarks/
        # kernel_static.py --all-configs`). Only a GPU can say which is faster. (Bias-free, ptxas
        # allocates 156 registers under the cap rather than 128: 3 blocks rather than 4. The
        # autotuner tunes the two apart.)
        dict(BLOCK=64, num_warps=4, num_stages=2, maxnreg=168),
    ]


@triton.jit
def _dkdv_tile(
    dk, dv, k, v, offs_n, n_ok, n_start, tk_hi, tk_lo, ts_base, m_start, seq_len,
    Q, DO, TS, REQ_TS, POS_W, TS_W, THR, EDGES, FIRST_Q, BAND, POS_SKEW,
    stride_qt, stride_dot, t_stride, skew_stride, skew_pad, alpha, max_seq_len, num_buckets,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    MASKED: tl.constexpr, KIND: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    FAST_RAB: tl.constexpr, MAX_EDGES: tl.constexpr, EDGE_PAD: tl.constexpr, PROBE_EDGES: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
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
    do_ok = m_ok
    # Transposed tile [keys, queries], so dk and dv come out of plain (not transposed) dots.
    if FAST_RAB:
        # As in the forward, transposed; the next-event rule is in the edge table.
        tl.static_assert(not MASKED or KIND == DIAGONAL_TILE, "a masked tile is a diagonal one")
        lo, hi = tile_time_range(EDGES, t_stride, m_start, tl.minimum(m_start + BLOCK_M, seq_len) - 1, n_start,
                                 n_start + BLOCK_N - 1, num_buckets, HAS_TS, MASKED, EDGE_PAD)
        pos_t = position_bias(POS_SKEW, skew_stride, skew_pad, m_start, n_start, max_seq_len, HAS_POS, HAS_TS,
                              KIND, True, BLOCK_M, BLOCK_N)
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)
        # Rows are keys: their edge tests read `first_query_table` (one value per key row).
        s_t = scaled_logits(s_t, alpha, pos_t, offs_n, n_ok, m_start, lo, hi, FIRST_Q, t_stride, BAND, seq_len,
                            TS_W, num_buckets, HAS_TS, True, KIND, MAX_EDGES, PROBE_EDGES, BLOCK_M)
        # Its dout loads as zeros where the many-edge loop redoes the tile, which zeroes both its
        # dv and (through dp) its dk terms.
        do_ok = unless_many_edges(m_ok, offs_m, lo, hi, HAS_TS, KIND, MAX_EDGES)
    else:
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * alpha
        # Next-event rule as in the forward: ts[i + 1], the request time for the last query.
        s_t, _ = exact_rab(s_t, offs_m, offs_n, n_ok, 0.0, 0.0, tk_hi, tk_lo, ts_base, seq_len, TS, REQ_TS,
                           POS_W, TS_W, THR, max_seq_len, num_buckets, HAS_POS, HAS_TS, True)
    do = tl.load(DO + offs_m[:, None] * stride_dot + offs_dv[None, :],
                 mask=do_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)
    # dS up to the logit scale, which dk's alpha carries (`silu_and_grad`).
    p_t, grad_t = silu_and_grad(s_t, FAST_MATH)
    dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
    ds_t = dp_t * grad_t
    if MASKED:
        causal = offs_n[:, None] <= offs_m[None, :]
        p_t = tl.where(causal, p_t, 0.0)
        ds_t = tl.where(causal, ds_t, 0.0)
    dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
    dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def _dkdv_kernel(
    Q, K, V, DO, DK, DV, SEQ_OFFSETS, TS, REQ_TS, POS_W, TS_W, THR, EDGES, FIRST_Q, BAND, POS_SKEW,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh, t_stride, skew_stride, skew_pad,
    H, max_seq_len, num_buckets, alpha, tune_len,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    NORM_MAX_LEN: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    FAST_RAB: tl.constexpr, MAX_EDGES: tl.constexpr, EDGE_PAD: tl.constexpr, PROBE_EDGES: tl.constexpr,
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
    EDGES += seq_start
    FIRST_Q += seq_start
    BAND += seq_start * BAND_TOKEN
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    n_ok = offs_n < seq_len
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_dqk[None, :],
                mask=n_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_dv[None, :],
                mask=n_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)
    ts_base, tk_hi, tk_lo = exact_row_times(TS, REQ_TS, offs_n, n_ok, seq_len, HAS_TS and not FAST_RAB, True)

    m_first = (n_start // BLOCK_M) * BLOCK_M
    # Query blocks starting at or after the block's last key + 1 see every key: no causal mask.
    m_full = tl.minimum(tl.cdiv(n_start + BLOCK_N, BLOCK_M) * BLOCK_M, seq_len)
    # The diagonal tiles (reading the band), the first one outside any loop: dk and dv are
    # defined by its dots, so no path into a loop's wgmma wait defines them by other
    # instructions (ptxas then serializes every wgmma of the kernel: warning C7515).
    dk, dv = _dkdv_tile(tl.zeros((BLOCK_N, BLOCK_DQK), dtype=tl.float32), tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32),
                        k, v, offs_n, n_ok, n_start, tk_hi, tk_lo, ts_base, m_first, seq_len,
                        Q, DO, TS, REQ_TS, POS_W, TS_W, THR, EDGES, FIRST_Q, BAND, POS_SKEW,
                        stride_qt, stride_dot, t_stride, skew_stride, skew_pad, alpha, max_seq_len,
                        num_buckets, D_QK, D_V, True, DIAGONAL_TILE, HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD,
                        PROBE_EDGES, BLOCK_N, BLOCK_M, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
    # The others (when BLOCK_N > BLOCK_M), not pipelined with the band (as the forward's).
    for m_start in tl.range(m_first + BLOCK_M, m_full, BLOCK_M, num_stages=1 if FAST_RAB and HAS_TS else None):
        dk, dv = _dkdv_tile(dk, dv, k, v, offs_n, n_ok, n_start, tk_hi, tk_lo, ts_base, m_start, seq_len,
                            Q, DO, TS, REQ_TS, POS_W, TS_W, THR, EDGES, FIRST_Q, BAND, POS_SKEW,
                            stride_qt, stride_dot, t_stride, skew_stride, skew_pad, alpha, max_seq_len,
                            num_buckets, D_QK, D_V, True, DIAGONAL_TILE, HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD,
                            PROBE_EDGES, BLOCK_N, BLOCK_M, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
    for m_start in range(m_full, seq_len, BLOCK_M):
        dk, dv = _dkdv_tile(dk, dv, k, v, offs_n, n_ok, n_start, tk_hi, tk_lo, ts_base, m_start, seq_len,
                            Q, DO, TS, REQ_TS, POS_W, TS_W, THR, EDGES, FIRST_Q, BAND, POS_SKEW,
                            stride_qt, stride_dot, t_stride, skew_stride, skew_pad, alpha, max_seq_len,
                            num_buckets, D_QK, D_V, False, FAR_TILE, HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD,
                            PROBE_EDGES, BLOCK_N, BLOCK_M, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
    if FAST_RAB and HAS_TS:
        # Far tiles spanning more edges than the loop above unrolls, redone: near the diagonal
        # from the band (as the diagonal tiles), beyond it with all their edges.
        band_end = band_query_end(n_start, seq_len, m_full, BLOCK_M)
        for m_start in tl.range(m_full, band_end, BLOCK_M, num_stages=1):
            if spans_many_edges(EDGES, t_stride, m_start, tl.minimum(m_start + BLOCK_M, seq_len) - 1, n_start,
                                n_start + BLOCK_N - 1, num_buckets, MAX_EDGES, EDGE_PAD):
                dk, dv = _dkdv_tile(dk, dv, k, v, offs_n, n_ok, n_start, tk_hi, tk_lo, ts_base, m_start, seq_len,
                                    Q, DO, TS, REQ_TS, POS_W, TS_W, THR, EDGES, FIRST_Q, BAND, POS_SKEW,
                                    stride_qt, stride_dot, t_stride, skew_stride, skew_pad, alpha, max_seq_len,
                                    num_buckets, D_QK, D_V, False, DIAGONAL_TILE, HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES,
                                    EDGE_PAD, PROBE_EDGES, BLOCK_N, BLOCK_M, BLOCK_DQK, BLOCK_DV, DOT_PRECISION,
                                    FAST_MATH)
        for m_start in range(band_end, seq_len, BLOCK_M):
            if spans_many_edges(EDGES, t_stride, m_start, tl.minimum(m_start + BLOCK_M, seq_len) - 1, n_start,
                                n_start + BLOCK_N - 1, num_buckets, MAX_EDGES, EDGE_PAD):
                dk, dv = _dkdv_tile(dk, dv, k, v, offs_n, n_ok, n_start, tk_hi, tk_lo, ts_base, m_start, seq_len,
                                    Q, DO, TS, REQ_TS, POS_W, TS_W, THR, EDGES, FIRST_Q, BAND, POS_SKEW,
                                    stride_qt, stride_dot, t_stride, skew_stride, skew_pad, alpha, max_seq_len,
                                    num_buckets, D_QK, D_V, False, MANY_EDGE_TILE, HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES,
                                    EDGE_PAD, PROBE_EDGES, BLOCK_N, BLOCK_M, BLOCK_DQK, BLOCK_DV, DOT_PRECISION,
                                    FAST_MATH)

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
    dq, q, do, offs_m, m_ok, tq_hi, tq_lo, ts_base, n_start, m_start, seq_len,
    K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW,
    stride_kt, stride_vt, t_stride, skew_stride, skew_pad, alpha, max_seq_len, num_buckets,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    MASKED: tl.constexpr, KIND: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    FAST_RAB: tl.constexpr, MAX_EDGES: tl.constexpr, EDGE_PAD: tl.constexpr, PROBE_EDGES: tl.constexpr,
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
    v_ok = n_ok
    if FAST_RAB:
        lo, hi = tile_time_range(EDGES, t_stride, m_start, tl.minimum(m_start + BLOCK, seq_len) - 1, n_start,
                                 n_start + BLOCK - 1, num_buckets, HAS_TS, MASKED, EDGE_PAD)
        # Its V tile loads as zeros where the many-edge loop redoes the tile: dp and ds are zero.
        v_ok = unless_many_edges(n_ok, offs_n, lo, hi, HAS_TS, KIND, MAX_EDGES)
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_dqk[None, :],
                mask=n_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_dv[None, :],
                mask=v_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    if FAST_RAB:
        pos = position_bias(POS_SKEW, skew_stride, skew_pad, m_start, n_start, max_seq_len, HAS_POS, HAS_TS, KIND,
                            False, BLOCK, BLOCK)
        tl.static_assert(not MASKED or KIND == DIAGONAL_TILE, "a masked tile is a diagonal one")
        s = scaled_logits(s, alpha, pos, offs_m, m_ok, n_start, lo, hi, EDGES, t_stride, BAND, seq_len, TS_W,
                          num_buckets, HAS_TS, False, KIND, MAX_EDGES, PROBE_EDGES, BLOCK)
    else:
        s, _ = exact_rab(s * alpha, offs_m, offs_n, n_ok, tq_hi, tq_lo, 0.0, 0.0, ts_base, seq_len, TS, TS,
                         POS_W, TS_W, THR, max_seq_len, num_buckets, HAS_POS, HAS_TS, False)
    # dS up to the logit scale, which dq's alpha carries (`silu_grad`).
    grad = silu_grad(s, FAST_MATH)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    ds = dp * grad
    if MASKED:
        # Padded rows already have ds = 0 (their dout is zero); this is the causal cut.
        causal = offs_n[None, :] <= offs_m[:, None]
        ds = tl.where(causal, ds, 0.0)
    return tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)


@triton.jit
def _dq_kernel(
    Q, K, V, DO, DQ, SEQ_OFFSETS, TS, REQ_TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dqt, stride_dqh, t_stride, skew_stride, skew_pad,
    H, max_seq_len, num_buckets, alpha, tune_len,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    NORM_MAX_LEN: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    FAST_RAB: tl.constexpr, MAX_EDGES: tl.constexpr, EDGE_PAD: tl.constexpr, PROBE_EDGES: tl.constexpr,
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
    EDGES += seq_start
    BAND += seq_start * BAND_TOKEN
    offs_m = m_start + tl.arange(0, BLOCK)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < seq_len
    ts_base, tq_hi, tq_lo = exact_row_times(TS, REQ_TS, offs_m, m_ok, seq_len, HAS_TS and not FAST_RAB, False)
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_dqk[None, :],
                mask=m_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_dot + offs_dv[None, :],
                 mask=m_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)

    # The diagonal tile first: it defines dq by a dot, so no path into the pipelined loop's
    # wait defines the accumulator by other instructions (ptxas would serialize every wgmma).
    dq = _dq_tile(
        tl.zeros((BLOCK, BLOCK_DQK), dtype=tl.float32), q, do, offs_m, m_ok, tq_hi, tq_lo, ts_base, m_start, m_start, seq_len,
        K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW, stride_kt, stride_vt, t_stride, skew_stride,
        skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, True, DIAGONAL_TILE, HAS_POS, HAS_TS, FAST_RAB,
        MAX_EDGES, EDGE_PAD, PROBE_EDGES, BLOCK, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
    for n_start in range(0, m_start, BLOCK):
        dq = _dq_tile(
            dq, q, do, offs_m, m_ok, tq_hi, tq_lo, ts_base, n_start, m_start, seq_len,
            K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW, stride_kt, stride_vt, t_stride, skew_stride,
            skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, False, FAR_TILE, HAS_POS, HAS_TS, FAST_RAB,
            MAX_EDGES, EDGE_PAD, PROBE_EDGES, BLOCK, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
    if FAST_RAB and HAS_TS:
        # Far tiles spanning more edges than the first loop unrolls, redone: near the diagonal
        # from the band (as the diagonal tile), beyond it with all their edges.
        row_last = tl.minimum(m_start + BLOCK, seq_len) - 1
        band_start = tl.minimum(first_band_block(row_last, BLOCK), m_start)
        for n_start in range(0, band_start, BLOCK):
            if spans_many_edges(EDGES, t_stride, m_start, row_last, n_start, n_start + BLOCK - 1, num_buckets,
                                MAX_EDGES, EDGE_PAD):
                dq = _dq_tile(
                    dq, q, do, offs_m, m_ok, tq_hi, tq_lo, ts_base, n_start, m_start, seq_len,
                    K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW, stride_kt, stride_vt, t_stride,
                    skew_stride, skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, False, MANY_EDGE_TILE, HAS_POS,
                    HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD, PROBE_EDGES, BLOCK, BLOCK_DQK, BLOCK_DV,
                    DOT_PRECISION, FAST_MATH)
        for n_start in tl.range(band_start, m_start, BLOCK, num_stages=1):
            if spans_many_edges(EDGES, t_stride, m_start, row_last, n_start, n_start + BLOCK - 1, num_buckets,
                                MAX_EDGES, EDGE_PAD):
                dq = _dq_tile(
                    dq, q, do, offs_m, m_ok, tq_hi, tq_lo, ts_base, n_start, m_start, seq_len,
                    K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW, stride_kt, stride_vt, t_stride,
                    skew_stride, skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, False, DIAGONAL_TILE, HAS_POS,
                    HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD, PROBE_EDGES, BLOCK, BLOCK_DQK, BLOCK_DV,
                    DOT_PRECISION, FAST_MATH)

    if NORM_MAX_LEN:
        inv_n = 1.0 / max_seq_len
    else:
        inv_n = 1.0 / seq_len
    tl.store(DQ + offs_m[:, None] * stride_dqt + offs_dqk[None, :], (dq * (alpha * inv_n)).to(DQ.dtype.element_ty),
             mask=m_ok[:, None] & (offs_dqk[None, :] < D_QK))


_dkdv_tuned = triton.autotune(configs=as_triton_configs(DKDV_CONFIGS), key=BACKWARD_TUNE_KEY)(_dkdv_kernel)
_dq_tuned = triton.autotune(configs=as_triton_configs(DQ_CONFIGS), key=BACKWARD_TUNE_KEY)(_dq_kernel)


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
    rab_grad_config: dict[str, int] | None = None,
    fast_rab: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(dq, dk, dv, d_pos_weights, d_ts_weights) for dout: [T, H, Dv]; None for absent weights.

    The *_config arguments (block sizes, num_warps, num_stages, optionally maxnreg) bypass the autotuner (tests);
    fast_rab=False forces the exact per-logit bias on every tile. The weight gradients are
    reduced without atomics (per-program scratch rows summed in a fixed order): bit-identical
    from run to run.
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
    d_pos = q.new_zeros(pos_weights.shape if pos_weights is not None else (1,), dtype=torch.float32)
    d_ts = q.new_zeros(ts_weights.shape if ts_weights is not None else (1,), dtype=torch.float32)

    if num_tokens > 0 and num_seqs > 0:
        # With fast math the kernels' logits are s / 2 (`logit_scale`): alpha and the weights
        # halved; dq and dk, scaled by alpha, come out right.
        scale = logit_scale(fast_math(q.dtype))
        ts, req_ts, pos_w, ts_w, thr, num_buckets = rab_args(
            q, seq_offsets, timestamps, request_timestamps, pos_weights, ts_weights, scale
        )
        tables = rab_tables(q, seq_offsets, max_seq_len, ts, req_ts, pos_w if pos_weights is not None else None,
                            ts_w if ts_weights is not None else None, fast=fast_rab,
                            batch=(timestamps, request_timestamps, seq_offsets))
        common = (num_heads, max_seq_len, num_buckets, float(alpha) * scale, tune_key_len(max_seq_len), dqk, dvd)
        table_args = (tables.edge_stride, tables.skew_stride, tables.skew_pad)
        meta = dict(
            NORM_MAX_LEN=norm == "max_len", HAS_POS=pos_weights is not None, HAS_TS=ts_weights is not None,
            FAST_RAB=tables.fast, MAX_EDGES=tables.max_edges, EDGE_PAD=tables.edge_pad, PROBE_EDGES=-1,
            BLOCK_DQK=block_d(dqk), BLOCK_DV=block_d(dvd),
            DOT_PRECISION=dot_precision(q.dtype), FAST_MATH=fast_math(q.dtype),
        )
        in_strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                      dout.stride(0), dout.stride(1))

        keys_table, keys_stride, keys_pad = tables.keys_first()
        dkdv_args = (q, k, v, dout, dk, dv, seq_offsets, ts, req_ts, pos_w, ts_w, thr, tables.edges,
                     tables.first_queries(), tables.band_table, keys_table, *in_strides, dk.stride(0), dk.stride(1),
                     dv.stride(0), dv.stride(1),
                     tables.edge_stride, keys_stride, keys_pad, *common)
        dq_args = (q, k, v, dout, dq, seq_offsets, ts, req_ts, pos_w, ts_w, thr, tables.edges, tables.band_table,
                   tables.pos_skew,
                   *in_strides, dq.stride(0), dq.stride(1), *table_args, *common)
        # One program per (block, sequence, head); blocks counted over max_seq_len (no host sync).
        for tuned, kernel, block, args, config in ((_dkdv_tuned, _dkdv_kernel, "BLOCK_N", dkdv_args, dkdv_config),
                                                   (_dq_tuned, _dq_kernel, "BLOCK", dq_args, dq_config)):
            def grid(cfg: dict, block: str = block) -> tuple[int]:
                return (triton.cdiv(max_seq_len, cfg[block]) * num_seqs * num_heads,)

            if config is None:
                tuned[grid](*args, **meta)
            else:
                kernel[grid(config)](*args, **meta, **config)
        if pos_weights is not None or ts_weights is not None:
            d_pos_part, d_ts_part = rab_weight_gradients(
                q, k, v, dout, seq_offsets, max_seq_len, float(alpha) * scale, (ts, req_ts, pos_w, ts_w, thr, num_buckets),
                tables, meta, config=rab_grad_config)
            d_pos = d_pos_part if d_pos_part is not None else d_pos
            d_ts = d_ts_part if d_ts_part is not None else d_ts
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
