"""Triton kernel of the relative attention bias's weight gradients (d pos_weights, d ts_weights).

The bias is shared by the heads, so its gradients need dS only summed over them:

    d_pos[j - i + N - 1] = sum_h ds_h / n,   d_ts[bucket(i, j)] = sum_h ds_h / n

One program per (sequence, distance d from the diagonal in blocks, chunk) walks up to CHUNK_TILES
of the tiles d blocks left of the diagonal (query block m, key block m - d) and, per tile, the
heads (a walk of the whole distance was the backward's longest chain): it computes the tile's
bias once, recomputes each head's dS from two dots (q k^T and dout v^T, as the dq kernel does) and
sums them in registers. Reductions:
- time: per tile, the head-summed dS total to the tile's lowest bucket lo and, per edge k inside
  the tile, the dS of the keys past it (j <= J[k, i]) to bucket k and minus to k - 1 (on the exact
  path for unsorted timestamps, one masked sum per bucket of the tile's range), into a register
  histogram;
- position: every tile of a program has the same positional weights (pair (ii, jj) of a tile at
  distance d is offset jj - ii - d * BLOCK), so the program sums its tiles' dS and reduces the sum
  once at the end: `tl.gather` rotates row ii left by ii, so column c holds the offset
  c - d * BLOCK (unwrapped) or c - (d + 1) * BLOCK (wrapped), and two column sums give them.

When the dq kernel did these reductions per (tile, head), they were its largest cost and its
register spills, and its positional scratch was quadratic in the length per head; here they run
once per tile (time) or per program (position), and the scratch is small: per program 2 BLOCK
floats and a histogram. No atomics: each program writes its own scratch rows and PyTorch sums them
in a fixed order, so the weight gradients are bit-identical from run to run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.hstu_attention.triton_common import (
    BACKWARD_TUNE_KEY, BAND_TOKEN, DIAGONAL_TILE, FAR_TILE, INTERPRET, MANY_EDGE_TILE, add_time_bias,
    as_triton_configs, exact_rab, exact_row_times, passing_pairs, position_bias, silu_grad, spans_many_edges,
    tile_time_range, tune_key_len, unless_many_edges,
)
from kernels.hstu_attention.rab_tables import RabTables

# Autotune candidates as launch kwargs (tests run each one explicitly through `config=`). Tiles
# are square: the diagonal-sum rotation of the positional gradient needs it.
if INTERPRET:
    RAB_GRAD_CONFIGS = [dict(BLOCK=32, num_warps=4, num_stages=1)]
else:
    # sm_90: 4 warps cost the fewest instructions per logit but spill once per tile (not in the
    # loop over heads); 8 warps do not spill; either way an SM holds 8 warps (255 and 210
    # registers). Capped at 128 registers, 8-warp blocks fit twice: 16 warps, for spills outside
    # the loop over heads and ~1 more instruction per logit (benchmarks/kernel_static.py
    # --all-configs). A GPU decides.
    RAB_GRAD_CONFIGS = [
        dict(BLOCK=64, num_warps=4, num_stages=2),
        dict(BLOCK=64, num_warps=8, num_stages=2),
        dict(BLOCK=64, num_warps=4, num_stages=3),
        dict(BLOCK=64, num_warps=8, num_stages=2, maxnreg=128),
    ]


@triton.jit
def _past_edge_sum(hist, ds, offs_m, live, offs_n, edge, EDGES, t_stride, HIST_PAD: tl.constexpr):
    """hist + the sum of dS over the keys past `edge` (bucket >= edge) to bucket edge, minus it from
    edge - 1: summed over the edges, bucket k gets exactly its pairs' dS."""
    ks = tl.arange(0, HIST_PAD)
    last_key = tl.load(EDGES + (edge - 1) * t_stride + offs_m, mask=live, other=-1)
    # The forward's indicator, with absolute key indices (a tile starting at key 0).
    past = tl.sum(ds * passing_pairs(last_key, offs_n.to(tl.float32), 0, False))
    return hist + tl.where(ks == edge, past, 0.0) - tl.where(ks == edge - 1, past, 0.0)


@triton.jit
def _edge_sums_unrolled(hist, ds, offs_m, m_ok, offs_n, lo, hi, EDGES, t_stride, COUNT: tl.constexpr,
                        HIST_PAD: tl.constexpr):
    for e in tl.static_range(COUNT):
        edge = lo + 1 + e
        hist = _past_edge_sum(hist, ds, offs_m, m_ok & (offs_m * 0 + edge <= hi), offs_n, edge, EDGES, t_stride,
                              HIST_PAD)
    return hist


@triton.jit
def _time_gradient(hist, ds, offs_m, m_ok, offs_n, lo, hi, EDGES, t_stride, KIND: tl.constexpr,
                   MAX_EDGES: tl.constexpr, PROBE_EDGES: tl.constexpr, HIST_PAD: tl.constexpr):
    """hist + the time-weight gradient of a tile whose buckets are lo .. hi (the edge table's sums:
    the tile's total to bucket lo, and per edge the sum past it moved up one bucket)."""
    ks = tl.arange(0, HIST_PAD)
    hist += tl.where(ks == lo, tl.sum(ds), 0.0)
    if KIND == FAR_TILE:
        if PROBE_EDGES >= 0:
            hist = _edge_sums_unrolled(hist, ds, offs_m, m_ok, offs_n, lo, hi, EDGES, t_stride, PROBE_EDGES,
                                       HIST_PAD)
        else:
            if hi > lo:
                if hi - lo <= 2:
                    hist = _edge_sums_unrolled(hist, ds, offs_m, m_ok, offs_n, lo, hi, EDGES, t_stride, 2, HIST_PAD)
                else:
                    hist = _edge_sums_unrolled(hist, ds, offs_m, m_ok, offs_n, lo, hi, EDGES, t_stride, MAX_EDGES,
                                               HIST_PAD)
    else:
        # Diagonal and many-edge tiles. Merging runs of edges that pass the same pairs (as the
        # forward's many-edge loop does) cost this kernel 400 more bytes of spills and a spill
        # reload in its loop over heads (benchmarks/kernel_static.py), so every edge is summed.
        for edge in range(lo + 1, hi + 1):
            hist = _past_edge_sum(hist, ds, offs_m, m_ok, offs_n, edge, EDGES, t_stride, HIST_PAD)
    return hist


@triton.jit
def _bucket_hist(hist, ds, bucket, offs_m, offs_n, seq_len, num_buckets, MASKED: tl.constexpr,
                 HIST_PAD: tl.constexpr):
    """hist + the time-weight gradient of a tile with per-logit buckets (the exact path): one
    masked sum per bucket of the tile's range (short away from the diagonal)."""
    ks = tl.arange(0, HIST_PAD)
    if MASKED:
        valid = (offs_n[None, :] <= offs_m[:, None]) & (offs_m[:, None] < seq_len)
        lo = tl.min(tl.where(valid, bucket, num_buckets))
        hi = tl.max(tl.where(valid, bucket, 0))
    else:
        # Padded rows read the request time, so their buckets are those of the last real row:
        # they cannot widen the range.
        lo = tl.min(bucket)
        hi = tl.max(bucket)
    for kb in range(lo, hi + 1):
        hist += tl.where(ks == kb, tl.sum(tl.where(bucket == kb, ds, 0.0)), 0.0)
    return hist


@triton.jit
def _head_summed_ds(bias, offs_m, m_ok, do_ok, offs_n, n_ok, H, Q, K, V, DO,
                    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
                    alpha, D_QK: tl.constexpr, D_V: tl.constexpr, BLOCK: tl.constexpr, BLOCK_DQK: tl.constexpr,
                    BLOCK_DV: tl.constexpr, DOT_PRECISION: tl.constexpr, FAST_MATH: tl.constexpr):
    """sum over heads of dS = (dout v^T) * silu'(s) for one tile (unmasked), from the logits as the
    kernels carry them: alpha q k^T + bias = s * logit_scale (alpha and the bias weights scaled by
    the host)."""
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_mask = m_ok[:, None] & (offs_dqk[None, :] < D_QK)
    do_mask = do_ok[:, None] & (offs_dv[None, :] < D_V)
    k_mask = n_ok[:, None] & (offs_dqk[None, :] < D_QK)
    v_mask = n_ok[:, None] & (offs_dv[None, :] < D_V)
    ds_sum = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for h in range(H):
        q = tl.load(Q + h * stride_qh + offs_m[:, None] * stride_qt + offs_dqk[None, :], mask=q_mask, other=0.0)
        k = tl.load(K + h * stride_kh + offs_n[:, None] * stride_kt + offs_dqk[None, :], mask=k_mask, other=0.0)
        do = tl.load(DO + h * stride_doh + offs_m[:, None] * stride_dot + offs_dv[None, :], mask=do_mask, other=0.0)
        v = tl.load(V + h * stride_vh + offs_n[:, None] * stride_vt + offs_dv[None, :], mask=v_mask, other=0.0)
        # silu' before the second dot: fewer tiles live at once.
        grad = silu_grad(tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * alpha + bias, FAST_MATH)
        ds_sum += tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION) * grad
    # The logits are s * logit_scale (`silu_and_grad`): s / 2 with fast math.
    if FAST_MATH:
        ds_sum = ds_sum * 0.5
    return ds_sum


@triton.jit
def _rab_grad_tile(
    ds_acc, hist, m_start, n_start, seq_len, H, Q, K, V, DO, TS, REQ_TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    t_stride, skew_stride, skew_pad, alpha, max_seq_len, num_buckets,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    MASKED: tl.constexpr, KIND: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    FAST_RAB: tl.constexpr, MAX_EDGES: tl.constexpr, EDGE_PAD: tl.constexpr, PROBE_EDGES: tl.constexpr,
    HIST_PAD: tl.constexpr, BLOCK: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, FAST_MATH: tl.constexpr,
):
    """(ds_acc + the tile's head-summed dS, hist + its time-weight gradient)."""
    tl.static_assert(not MASKED or KIND == DIAGONAL_TILE, "a masked tile is a diagonal one")
    offs_m = m_start + tl.arange(0, BLOCK)
    offs_n = n_start + tl.arange(0, BLOCK)
    m_ok = offs_m < seq_len
    if MASKED:
        n_ok = offs_n < seq_len
    else:
        n_ok = tl.full((BLOCK,), 1, tl.int1)
    # Zero dout zeroes dS: padded rows, and far tiles redone in the many-edge loop.
    do_ok = m_ok
    # The tile's bias, once for all heads.
    zero = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    if FAST_RAB:
        lo, hi = tile_time_range(EDGES, t_stride, m_start, tl.minimum(m_start + BLOCK, seq_len) - 1, n_start,
                                 n_start + BLOCK - 1, num_buckets, HAS_TS, MASKED, EDGE_PAD)
        # Where the many-edge loop redoes the tile, zero dout zeroes its dS here, and it runs as a
        # tile with no edge (as its bias in `add_time_bias`), so its time sums skip the edges too.
        do_ok = unless_many_edges(m_ok, offs_m, lo, hi, HAS_TS, KIND, MAX_EDGES)
        if HAS_TS and KIND == FAR_TILE:
            hi = tl.where(hi - lo <= MAX_EDGES, hi, lo)
        if HAS_POS:
            base = position_bias(POS_SKEW, skew_stride, skew_pad, m_start, n_start, max_seq_len, HAS_POS, HAS_TS,
                                 KIND, False, BLOCK, BLOCK)
        else:
            base = zero
        bias = add_time_bias(base, offs_m, m_ok, n_start, lo, hi, EDGES, t_stride, BAND, seq_len, TS_W, num_buckets,
                             HAS_TS, False, KIND, MAX_EDGES, PROBE_EDGES, BLOCK)
    else:
        ts_base, tq_hi, tq_lo = exact_row_times(TS, REQ_TS, offs_m, m_ok, seq_len, HAS_TS, False)
        bias, bucket = exact_rab(zero, offs_m, offs_n, n_ok, tq_hi, tq_lo, 0.0, 0.0, ts_base, seq_len, TS, TS,
                                 POS_W, TS_W, THR, max_seq_len, num_buckets, HAS_POS, HAS_TS, False)
    ds = _head_summed_ds(bias, offs_m, m_ok, do_ok, offs_n, n_ok, H, Q, K, V, DO, stride_qt, stride_qh, stride_kt,
                         stride_kh, stride_vt, stride_vh, stride_dot, stride_doh, alpha, D_QK, D_V, BLOCK, BLOCK_DQK,
                         BLOCK_DV, DOT_PRECISION, FAST_MATH)
    if MASKED:
        # Padded rows already have ds = 0 (their dout is zero); this is the causal cut.
        ds = tl.where(offs_n[None, :] <= offs_m[:, None], ds, 0.0)
    if HAS_TS:
        if FAST_RAB:
            hist = _time_gradient(hist, ds, offs_m, m_ok, offs_n, lo, hi, EDGES, t_stride, KIND, MAX_EDGES,
                                  PROBE_EDGES, HIST_PAD)
        else:
            hist = _bucket_hist(hist, ds, bucket, offs_m, offs_n, seq_len, num_buckets, MASKED, HIST_PAD)
    if HAS_POS:
        ds_acc += ds
    return ds_acc, hist


@triton.jit
def _rab_grad_kernel(
    Q, K, V, DO, SEQ_OFFSETS, TS, REQ_TS, POS_W, TS_W, THR, EDGES, BAND, POS_SKEW, DPOS_PART, DTS_PART,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    t_stride, skew_stride, skew_pad,
    H, max_seq_len, num_buckets, alpha, tune_len, chunk_tiles,
    D_QK: tl.constexpr, D_V: tl.constexpr,
    NORM_MAX_LEN: tl.constexpr, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr,
    FAST_RAB: tl.constexpr, MAX_EDGES: tl.constexpr, EDGE_PAD: tl.constexpr, PROBE_EDGES: tl.constexpr,
    HIST_PAD: tl.constexpr, BLOCK: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_PRECISION: tl.constexpr, FAST_MATH: tl.constexpr,
):
    pid = tl.program_id(0)
    num_blocks = tl.cdiv(max_seq_len, BLOCK)
    num_chunks = tl.cdiv(num_blocks, chunk_tiles)
    # pid = (b * num_blocks + dist) * num_chunks + chunk: the layout `_positional_gradient` reads.
    chunk = pid % num_chunks
    dist = (pid // num_chunks) % num_blocks
    b = pid // (num_chunks * num_blocks)
    seq_start = tl.load(SEQ_OFFSETS + b).to(tl.int64)
    seq_len = (tl.load(SEQ_OFFSETS + b + 1) - seq_start).to(tl.int32)
    # This program's tiles: query blocks first_m .. end_m of distance dist, at most chunk_tiles.
    first_m = dist * BLOCK + chunk * chunk_tiles * BLOCK
    if first_m >= seq_len:
        return
    end_m = tl.minimum(first_m + chunk_tiles * BLOCK, seq_len)

    Q += seq_start * stride_qt
    K += seq_start * stride_kt
    V += seq_start * stride_vt
    DO += seq_start * stride_dot
    TS += seq_start
    REQ_TS += b
    EDGES += seq_start
    BAND += seq_start * BAND_TOKEN
    # This program's rows of the scratch buffers, written by it alone.
    DPOS_PART += pid.to(tl.int64) * 2 * BLOCK
    DTS_PART += pid.to(tl.int64) * HIST_PAD

    # Every tile of this program is dist blocks left of the diagonal: the same positional
    # weights, so their head-summed dS add up as tiles and are reduced once, at the end.
    ds_acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    hist = tl.zeros((HIST_PAD,), dtype=tl.float32)
    shift = dist * BLOCK  # query block m_start meets key block m_start - shift
    if dist > 0:
        for m_start in range(first_m, end_m, BLOCK):
            ds_acc, hist = _rab_grad_tile(
                ds_acc, hist, m_start, m_start - shift, seq_len, H, Q, K, V, DO, TS, REQ_TS, POS_W, TS_W, THR,
                EDGES, BAND, POS_SKEW, stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot,
                stride_doh, t_stride, skew_stride, skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, False,
                FAR_TILE, HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD, PROBE_EDGES, HIST_PAD, BLOCK, BLOCK_DQK,
                BLOCK_DV, DOT_PRECISION, FAST_MATH)
        if FAST_RAB and HAS_TS:
            # Far tiles spanning more edges than the first loop unrolls, redone with all of them.
            for m_start in range(first_m, end_m, BLOCK):
                if spans_many_edges(EDGES, t_stride, m_start, tl.minimum(m_start + BLOCK, seq_len) - 1,
                                    m_start - shift, m_start - shift + BLOCK - 1, num_buckets, MAX_EDGES,
                                    EDGE_PAD):
                    ds_acc, hist = _rab_grad_tile(
                        ds_acc, hist, m_start, m_start - shift, seq_len, H, Q, K, V, DO, TS, REQ_TS, POS_W, TS_W,
                        THR, EDGES, BAND, POS_SKEW, stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                        stride_dot, stride_doh, t_stride, skew_stride, skew_pad, alpha, max_seq_len, num_buckets, D_QK,
                        D_V, False, MANY_EDGE_TILE, HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD, PROBE_EDGES,
                        HIST_PAD, BLOCK, BLOCK_DQK, BLOCK_DV, DOT_PRECISION, FAST_MATH)
    else:
        # The diagonal tiles, causal-masked.
        for m_start in range(first_m, end_m, BLOCK):
            ds_acc, hist = _rab_grad_tile(
                ds_acc, hist, m_start, m_start, seq_len, H, Q, K, V, DO, TS, REQ_TS, POS_W, TS_W, THR, EDGES,
                BAND, POS_SKEW, stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot,
                stride_doh, t_stride, skew_stride, skew_pad, alpha, max_seq_len, num_buckets, D_QK, D_V, True,
                DIAGONAL_TILE,
                HAS_POS, HAS_TS, FAST_RAB, MAX_EDGES, EDGE_PAD, PROBE_EDGES, HIST_PAD, BLOCK, BLOCK_DQK, BLOCK_DV,
                DOT_PRECISION, FAST_MATH)
    if NORM_MAX_LEN:
        inv_n = 1.0 / max_seq_len
    else:
        inv_n = 1.0 / seq_len
    if HAS_POS:
        rows = tl.arange(0, BLOCK)[:, None]
        cols = tl.arange(0, BLOCK)[None, :]
        wrapped = rows + cols >= BLOCK
        # rotated[ii, c] = ds[ii, (ii + c) mod BLOCK]: j - i = c - dist * BLOCK (unwrapped), or
        # c - (dist + 1) * BLOCK where wrapped.
        rotated = tl.gather(ds_acc, (rows + cols) & (BLOCK - 1), axis=1)
        lanes = tl.arange(0, BLOCK)
        tl.store(DPOS_PART + lanes, tl.sum(tl.where(wrapped, 0.0, rotated), axis=0) * inv_n)
        tl.store(DPOS_PART + BLOCK + lanes, tl.sum(tl.where(wrapped, rotated, 0.0), axis=0) * inv_n)
    if HAS_TS:
        tl.store(DTS_PART + tl.arange(0, HIST_PAD), hist * inv_n)


# Tiles one program walks at most: a distance's walk is split into programs of this many tiles, so
# the longest chain of dependent tiles (a long sequence's diagonal, heads inside) is this long
# rather than the sequence's length in blocks. On an H200 the unsplit walk made this kernel the
# backward's slowest, 3.7 ms at N 8192 where the dq kernel took 0.95 (benchmarks/results/
# attention-nvidia-h200.json). The scratch grows by the number of chunks, as B (N / BLOCK)^2 / 8:
# 28 MB at N 8192 with 9 sequences and 128 time buckets, 100 MB at N 4096 with 128 sequences.
# The interpreter's tests split at 2, so their sequences (a few 32-row blocks) take several chunks.
CHUNK_TILES = 2 if INTERPRET else 8


def _programs(max_seq_len: int, num_seqs: int, block: int) -> tuple[int, int]:
    """(programs, chunks per distance) of a launch with tiles of `block`."""
    num_dist = triton.cdiv(max_seq_len, block)
    num_chunks = triton.cdiv(num_dist, CHUNK_TILES)
    return num_seqs * num_dist * num_chunks, num_chunks


def _positional_gradient(parts: torch.Tensor, block: int, num_seqs: int, max_seq_len: int) -> torch.Tensor:
    """d pos_w from the kernel's diagonal sums: [num_seqs, distances, chunks, 2, block], flat.

    Distance d's first row holds weights N - 1 - d * block + c (lane c), its second the wrapped
    pairs, weights N - 1 - (d + 1) * block + c. Summed over sequences and chunks (a fixed order),
    the rows of one weight added, then scattered once into a buffer padded on both sides (indices
    distinct; those outside [0, 2N - 2] are pairs past the sequence, zero dS): deterministic, and
    no host sync (a boolean mask would take one).
    """
    num_dist = triton.cdiv(max_seq_len, block)
    programs, num_chunks = _programs(max_seq_len, num_seqs, block)
    summed = parts[: programs * 2 * block].view(num_seqs, num_dist, num_chunks, 2, block).sum(dim=(0, 2))
    # Row e = d + wrapped holds weights N - 1 - e * block + c: distance e's unwrapped pairs plus
    # distance e - 1's wrapped ones.
    rows = F.pad(summed[:, 0], (0, 0, 0, 1)) + F.pad(summed[:, 1], (0, 0, 1, 0))  # [num_dist + 1, block]
    shift = torch.arange(num_dist + 1, device=parts.device)[:, None] * block
    lane = torch.arange(block, device=parts.device)[None, :]
    # Those indices lie in [-block, N - 1 + block): a buffer padded by `low` on the left takes all.
    low = (num_dist + 1) * block
    idx = (max_seq_len - 1 + low) - shift + lane
    padded = parts.new_zeros(low + 2 * max_seq_len - 1 + block)
    padded[idx.reshape(-1)] = rows.reshape(-1)  # distinct indices
    return padded[low: low + 2 * max_seq_len - 1].clone()


def _scratch_sizes(max_seq_len: int, num_seqs: int, hist_pad: int, configs: list[dict[str, int]]
                   ) -> tuple[int, int]:
    """Elements of the positional and time scratch buffers, for the largest config."""
    pos = time = 0
    for cfg in configs:
        programs, _ = _programs(max_seq_len, num_seqs, cfg["BLOCK"])
        pos = max(pos, programs * 2 * cfg["BLOCK"])
        time = max(time, programs * hist_pad)
    return pos, time


# The autotuner replays the kernel while timing it; the scratch rows a program skips must read zero.
_rab_grad_tuned = triton.autotune(configs=as_triton_configs(RAB_GRAD_CONFIGS), key=BACKWARD_TUNE_KEY,
                                  reset_to_zero=["DPOS_PART", "DTS_PART"])(_rab_grad_kernel)


def rab_weight_gradients(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    rab: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int],
    tables: RabTables,
    meta: dict[str, Any],
    *,
    config: dict[str, int] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(d pos_weights, d ts_weights) as float32, None for an absent term.

    q, k, v, dout are the backward's prepared [T, H, D] inputs (padded head dims, unit last
    stride); `rab` is what `rab_args` returns, `tables` the batch's `rab_tables`, `meta` the
    backward kernels' constexprs (HAS_POS, HAS_TS, FAST_RAB, ...). `config` (block size,
    num_warps, num_stages) bypasses the autotuner (tests).
    """
    ts, req_ts, pos_w, ts_w, thr, num_buckets = rab
    has_pos, has_ts = meta["HAS_POS"], meta["HAS_TS"]
    num_seqs = seq_offsets.numel() - 1
    num_heads = q.shape[1]
    hist_pad = max(16, triton.next_power_of_2(num_buckets + 1))
    pos_size, ts_size = _scratch_sizes(max_seq_len, num_seqs, hist_pad, [config] if config else RAB_GRAD_CONFIGS)
    # Zero-filled: programs past their sequence's end write nothing.
    pos_part = q.new_zeros(pos_size if has_pos else 1, dtype=torch.float32)
    ts_part = q.new_zeros(ts_size if has_ts else 1, dtype=torch.float32)
    args = (q, k, v, dout, seq_offsets, ts, req_ts, pos_w, ts_w, thr, tables.edges, tables.band_table, tables.pos_skew,
            pos_part,
            ts_part, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), dout.stride(0),
            dout.stride(1), tables.edge_stride, tables.skew_stride, tables.skew_pad, num_heads, max_seq_len,
            num_buckets, float(alpha), tune_key_len(max_seq_len), CHUNK_TILES, q.shape[2], v.shape[2])

    def grid(cfg: dict) -> tuple[int]:
        return (_programs(max_seq_len, num_seqs, cfg["BLOCK"])[0],)

    if config is None:
        _rab_grad_tuned[grid](*args, **meta, HIST_PAD=hist_pad)
        block = _rab_grad_tuned.best_config.all_kwargs()["BLOCK"]
    else:
        _rab_grad_kernel[grid(config)](*args, **meta, HIST_PAD=hist_pad, **config)
        block = config["BLOCK"]
    programs, _ = _programs(max_seq_len, num_seqs, block)
    d_pos = _positional_gradient(pos_part, block, num_seqs, max_seq_len) if has_pos else None
    d_ts = ts_part[: programs * hist_pad].view(programs, hist_pad).sum(dim=0)[: num_buckets + 1] if has_ts else None
    return d_pos, d_ts


__all__ = ["RAB_GRAD_CONFIGS", "rab_weight_gradients"]
