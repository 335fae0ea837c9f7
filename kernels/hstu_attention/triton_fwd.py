"""Triton forward of jagged HSTU attention (semantics: `reference.hstu_attention_reference`).

One program per (query block, sequence, head). It loops over the key blocks up to the causal
limit, recomputing s = alpha * Q K^T + rab for the tile in registers (no [n, n] tensor touches
global memory) and accumulating silu(s) @ V in float32. SiLU attention has no softmax
normaliser, so nothing but the output is saved for the backward, which recomputes s.

Ordering choices:
- The 1-D grid enumerates query blocks from the last to the first within each (sequence, head):
  under the causal mask the last blocks have the most key blocks, and starting them first
  shortens the tail; the programs of one (sequence, head) are launched together so its K/V
  stay in L2.
- The grid is sized by max_seq_len (not the batch's longest sequence) so the launch needs no
  host sync; programs past their sequence's end return at once.
- Key blocks entirely left of the query block need no causal mask and run a lean loop; only the
  blocks crossing the diagonal pay for the mask.
- With the relative bias and sorted timestamps (`rab_tables`), the lean loop adds it by loads and
  selects, branching per tile on how many time-bucket edges the tile spans (0, <= 2, <= 4); a
  tile spanning more is zeroed there and redone after it (from the band near the diagonal, else
  in a loop over its edges), so the lean loop has no nested loop and stays software-pipelined.
  The diagonal tiles read their whole bias from the band (`rab_tables.diagonal_bias`).
- 1/n is applied once to the accumulator, not to every p.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.hstu_attention.triton_common import (
    BAND_TOKEN, DIAGONAL_TILE, FAR_TILE, INTERPRET, MANY_EDGE_TILE, as_triton_configs, block_d, check_inputs,
    dot_precision, exact_rab, exact_row_times, fast_math, first_band_block, last_dim_contiguous, logit_scale,
    pad_head_dim, position_bias, rab_args, scaled_logits, silu, spans_many_edges, tile_time_range, tune_key_len,
    unless_many_edges,
)
from kernels.hstu_attention.rab_tables import rab_tables


# Autotune candidates as launch kwargs (tests run each one explicitly through `config=`).
if INTERPRET:
    # One small config: the numpy interpreter gains nothing from tuning. BLOCK_M != BLOCK_N so
    # the tests exercise the non-square causal bookkeeping.
    FWD_CONFIGS = [dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1)]
else:
    FWD_CONFIGS = [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
        dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=3),
        # 64 x 64 tiles with two stages (56 KB with the bias) capped at 168 registers: 12 warps an
        # SM rather than 8 (uncapped: 228 registers), for 112-232 bytes of spills, some in the
        # 1-edge far loop
        # (benchmarks/kernel_static.py --all-configs). A GPU decides.
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2, maxnreg=168),
    ]


@triton.jit
def _fwd_tile(
    acc, q, offs_m, m_ok, m_start, tq_hi, tq_lo, ts_base, n_start, seq_len,
    K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW,
    stride_kt, stride_vt, t_stride, skew_stride, skew_pad, alpha, max_seq_len, num_buckets,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    MASKED: tl.constexpr, KIND: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    FAST_RAB: tl.constexpr, MAX_EDGES: tl.constexpr, EDGE_PAD: tl.constexpr, PROBE_EDGES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, FAST_MATH: tl.constexpr,
):
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    # Keys of an unmasked block all lie inside the sequence: only the head dim may need a mask.
    if MASKED:
        n_ok = offs_n < seq_len
    else:
        n_ok = tl.full((BLOCK_N,), 1, tl.int1)
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_dqk[None, :],
                mask=n_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    v_ok = n_ok
    if FAST_RAB:
        tl.static_assert(not MASKED or KIND == DIAGONAL_TILE, "a masked tile is a diagonal one")
        lo, hi = tile_time_range(EDGES, t_stride, m_start, tl.minimum(m_start + BLOCK_M, seq_len) - 1, n_start,
                                 n_start + BLOCK_N - 1, num_buckets, HAS_TS, MASKED, EDGE_PAD)
        pos = position_bias(POS_SKEW, skew_stride, skew_pad, m_start, n_start, max_seq_len, HAS_POS, HAS_TS, KIND,
                            False, BLOCK_M, BLOCK_N)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        s = scaled_logits(s, alpha, pos, offs_m, m_ok, n_start, lo, hi, EDGES, t_stride, BAND, seq_len, TS_W,
                          num_buckets, HAS_TS, False, KIND, MAX_EDGES, PROBE_EDGES, BLOCK_N)
        # Its V tile loads as zeros where the many-edge loop redoes the tile.
        v_ok = unless_many_edges(n_ok, offs_n, lo, hi, HAS_TS, KIND, MAX_EDGES)
    else:
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * alpha
        s, _ = exact_rab(s, offs_m, offs_n, n_ok, tq_hi, tq_lo, 0.0, 0.0, ts_base, seq_len, TS, TS,
                         POS_W, TS_W, THR, max_seq_len, num_buckets, HAS_POS, HAS_TS, False)
    p = silu(s, FAST_MATH)
    if MASKED:
        # Causal, diagonal included. Keys past the sequence need no mask of their own: for the
        # rows that are stored (i < n_b) they already fail j <= i.
        p = tl.where(offs_n[None, :] <= offs_m[:, None], p, 0.0)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_dv[None, :],
                mask=v_ok[:, None] & (offs_dv[None, :] < D_V), other=0.0)
    return tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)


@triton.jit
def _hstu_fwd_kernel(
    Q, K, V, OUT, SEQ_OFFSETS, TS, REQ_TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    t_stride, skew_stride, skew_pad,
    H, max_seq_len, num_buckets, alpha, tune_len,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    NORM_MAX_LEN: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    FAST_RAB: tl.constexpr, MAX_EDGES: tl.constexpr, EDGE_PAD: tl.constexpr, PROBE_EDGES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr, DOT_PRECISION: tl.constexpr, FAST_MATH: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m_blocks = tl.cdiv(max_seq_len, BLOCK_M)
    bh = pid // num_m_blocks
    m_block = num_m_blocks - 1 - pid % num_m_blocks  # heaviest (last) query blocks first
    b = bh // H
    h = bh % H
    seq_start = tl.load(SEQ_OFFSETS + b).to(tl.int64)
    seq_len = (tl.load(SEQ_OFFSETS + b + 1) - seq_start).to(tl.int32)
    m_start = m_block * BLOCK_M
    if m_start >= seq_len:
        return

    # 64-bit base offsets (T * H * D can pass 2**31); in-sequence offsets stay 32-bit.
    Q += seq_start * stride_qt + h * stride_qh
    K += seq_start * stride_kt + h * stride_kh
    V += seq_start * stride_vt + h * stride_vh
    OUT += seq_start * stride_ot + h * stride_oh
    TS += seq_start
    REQ_TS += b
    EDGES += seq_start
    BAND += seq_start * BAND_TOKEN
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < seq_len
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_dqk[None, :],
                mask=m_ok[:, None] & (offs_dqk[None, :] < D_QK), other=0.0)
    ts_base, tq_hi, tq_lo = exact_row_times(TS, REQ_TS, offs_m, m_ok, seq_len, HAS_TS and not FAST_RAB, False)

    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    n_full_end = (m_start // BLOCK_N) * BLOCK_N  # blocks wholly before the first query
    for n_start in range(0, n_full_end, BLOCK_N):
        acc = _fwd_tile(acc, q, offs_m, m_ok, m_start, tq_hi, tq_lo, ts_base, n_start, seq_len,
                        K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW, stride_kt, stride_vt, t_stride, skew_stride,
                        skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, False, FAR_TILE, HAS_POS, HAS_TS,
                        FAST_RAB, MAX_EDGES, EDGE_PAD, PROBE_EDGES, BLOCK_M, BLOCK_N, BLOCK_DQK, BLOCK_DV,
                        DOT_PRECISION, FAST_MATH)
    n_end = tl.minimum(m_start + BLOCK_M, seq_len)
    # The diagonal tiles (BLOCK_M / BLOCK_N of them). Reading the band (`band_bias`), not
    # pipelined: the pipeliner would stage its fp32 block through shared memory (+32 KB) for a loop
    # of one or two iterations.
    for n_start in tl.range(n_full_end, n_end, BLOCK_N, num_stages=1 if FAST_RAB and HAS_TS else None):
        acc = _fwd_tile(acc, q, offs_m, m_ok, m_start, tq_hi, tq_lo, ts_base, n_start, seq_len,
                        K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW, stride_kt, stride_vt, t_stride, skew_stride,
                        skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, True, DIAGONAL_TILE, HAS_POS, HAS_TS,
                        FAST_RAB, MAX_EDGES, EDGE_PAD, PROBE_EDGES, BLOCK_M, BLOCK_N, BLOCK_DQK, BLOCK_DV,
                        DOT_PRECISION, FAST_MATH)
    if FAST_RAB and HAS_TS:
        # Far tiles spanning more edges than the first loop unrolls (a jump in time inside the
        # tile), redone away from the pipelined loop: with a loop over their edges, or near the
        # diagonal from the band, as the diagonal tiles.
        band_start = tl.minimum(first_band_block(n_end - 1, BLOCK_N), n_full_end)
        for n_start in range(0, band_start, BLOCK_N):
            if spans_many_edges(EDGES, t_stride, m_start, n_end - 1, n_start, n_start + BLOCK_N - 1, num_buckets,
                                MAX_EDGES, EDGE_PAD):
                acc = _fwd_tile(acc, q, offs_m, m_ok, m_start, tq_hi, tq_lo, ts_base, n_start, seq_len,
                                K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW, stride_kt, stride_vt, t_stride,
                                skew_stride, skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, False, MANY_EDGE_TILE,
                                HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD, PROBE_EDGES, BLOCK_M, BLOCK_N,
                                BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
        for n_start in tl.range(band_start, n_full_end, BLOCK_N, num_stages=1):
            if spans_many_edges(EDGES, t_stride, m_start, n_end - 1, n_start, n_start + BLOCK_N - 1, num_buckets,
                                MAX_EDGES, EDGE_PAD):
                acc = _fwd_tile(acc, q, offs_m, m_ok, m_start, tq_hi, tq_lo, ts_base, n_start, seq_len,
                                K, V, TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW, stride_kt, stride_vt, t_stride,
                                skew_stride, skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, False, DIAGONAL_TILE,
                                HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD, PROBE_EDGES, BLOCK_M, BLOCK_N,
                                BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)

    if NORM_MAX_LEN:
        acc = acc / max_seq_len
    else:
        acc = acc / seq_len
    tl.store(OUT + offs_m[:, None] * stride_ot + offs_dv[None, :], acc.to(OUT.dtype.element_ty),
             mask=m_ok[:, None] & (offs_dv[None, :] < D_V))


_hstu_fwd_tuned = triton.autotune(
    configs=as_triton_configs(FWD_CONFIGS),
    key=["tune_len", "BLOCK_DQK", "BLOCK_DV", "HAS_POS", "HAS_TS", "FAST_RAB", "DOT_PRECISION"],
)(_hstu_fwd_kernel)


def hstu_attention_fwd_triton(
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
    config: dict[str, int] | None = None,
    fast_rab: bool = True,
) -> torch.Tensor:
    """Jagged causal HSTU attention forward. q, k: [T, H, Dqk]; v: [T, H, Dv]; seq_offsets [B+1] -> [T, H, Dv].

    Every sequence must be at most max_seq_len long (not checked here: it would need a host sync;
    the reference raises). `config` (BLOCK_M, BLOCK_N, num_warps, num_stages[, maxnreg]) bypasses the
    autotuner; tests use it to check each tuning candidate. fast_rab=False forces the exact
    per-logit bias on every tile (the fast path's reference in tests and benchmarks).
    """
    check_inputs(q, k, v, seq_offsets, max_seq_len, norm, timestamps, pos_weights, ts_weights, request_timestamps)
    dv_out = v.shape[2]
    q, k, v = (last_dim_contiguous(pad_head_dim(x)) for x in (q, k, v))
    num_tokens, num_heads, dqk = q.shape
    dv = v.shape[2]
    num_seqs = seq_offsets.numel() - 1
    out = torch.empty((num_tokens, num_heads, dv), dtype=v.dtype, device=v.device)
    if num_tokens == 0 or num_seqs == 0:
        return out[..., :dv_out].zero_()
    # With fast math the kernel's logits are s / 2 (`logit_scale`): alpha and the weights halved.
    scale = logit_scale(fast_math(q.dtype))
    ts, req_ts, pos_w, ts_w, thr, num_buckets = rab_args(
        q, seq_offsets, timestamps, request_timestamps, pos_weights, ts_weights, scale
    )
    tables = rab_tables(q, seq_offsets, max_seq_len, ts, req_ts, pos_w if pos_weights is not None else None,
                        ts_w if ts_weights is not None else None, fast=fast_rab,
                        batch=(timestamps, request_timestamps, seq_offsets))
    args = (
        q, k, v, out, seq_offsets, ts, req_ts, pos_w, ts_w, thr, tables.edges, tables.band_table, tables.pos_skew,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        tables.edge_stride, tables.skew_stride, tables.skew_pad, num_heads, max_seq_len, num_buckets, float(alpha) * scale, tune_key_len(max_seq_len), dqk, dv,
    )
    meta = dict(
        NORM_MAX_LEN=norm == "max_len", HAS_POS=pos_weights is not None, HAS_TS=ts_weights is not None,
        FAST_RAB=tables.fast, MAX_EDGES=tables.max_edges, EDGE_PAD=tables.edge_pad, PROBE_EDGES=-1, BLOCK_DQK=block_d(dqk), BLOCK_DV=block_d(dv),
        DOT_PRECISION=dot_precision(q.dtype), FAST_MATH=fast_math(q.dtype),
    )

    def grid(cfg: dict) -> tuple[int]:
        return (triton.cdiv(max_seq_len, cfg["BLOCK_M"]) * num_seqs * num_heads,)

    if config is None:
        _hstu_fwd_tuned[grid](*args, **meta)
    else:
        _hstu_fwd_kernel[grid(config)](*args, **meta, **config)
    return out if dv == dv_out else out[..., :dv_out].contiguous()


__all__ = ["FWD_CONFIGS", "hstu_attention_fwd_triton"]
