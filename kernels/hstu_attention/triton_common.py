"""Pieces shared by the forward (`triton_fwd.py`) and backward (`triton_bwd.py`, `triton_rab_grad.py`) HSTU
kernels.

- the fast path's pieces (sorted timestamps; the host tables of `rab_tables`):
  `position_bias` is an aligned block of the skewed positional table, and `scaled_logits` adds it
  and the time weight (`add_time_bias`), chosen among the tile's buckets by the edge table (`tile_buckets` bounds
  them per tile; per edge and logit one saturating add and one FFMA, `pass_edge`); tiles at the
  diagonal read both terms from the band instead (`band_bias`).
- `add_rab` / `exact_rab`: the bias computed per logit, for any timestamps (the path before the
  fast one, kept for unsorted timestamps): positional weights gathered by j - i, time weights by
  a time bucket computed below.
- `time_bucket`: bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, num_buckets).
- `silu`, `silu_grad`, `silu_and_grad`: tanh.approx-based for 16-bit inputs (on logits halved by the host,
  `logit_scale`), exact-ish for float32.
- host helpers: input checks, launch arguments, autotune settings.

Cost model of the per-logit path (H100, D = 64): a 128x64 tile's two matmuls take ~512 tensor-core cycles per SM, and
the SM's special-function / conversion unit does 16 lanes per cycle, so every MUFU op (exp,
rcp, lg2, tanh) or int<->float conversion (I2F, F2I, FRND) per logit costs another ~512 cycles;
64-bit values per logit double the registers of a tile and spill. A first bias (int64 gap ->
float -> log -> floor -> int) ran 14x slower than the bias-free kernel. So, per logit:
- the gap is two exact float32 differences (high bits and low 23 bits of the timestamps, split once
  per row/column by `split_time`), combined by one FMA into an approximate float32 gap;
- its log2 comes from the float32 exponent bits plus a degree-5 polynomial of the mantissa
  (ALU/FMA only), and rounding uses the 1.5 * 2^23 add trick, not FRND/F2I;
- sigmoid(s) = 0.5 + 0.5 tanh(s / 2) is one MUFU op where exp + reciprocal are two.

Exact buckets: the approximate log lands within `_EDGE_WINDOW` of the true one; within that
distance of an edge, an exact comparison of (high, low) parts with `bucket_thresholds` (the
reference's float64 edges as integers) decides. Gaps are integers, and near an edge
e^(0.301 k) ~ 1e6 consecutive integers are ~3e-6 bucket units apart, so a float32-only bucket
puts a few pairs per million in the wrong bucket (the unit test checks every edge). Exact for
gaps and for timestamps relative to their sequence's first event below 2^46 (2.2 million years in
seconds, 2.2 years in microseconds); beyond, still within one bucket.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from kernels.hstu_attention.reference import TIME_BUCKET_INCREMENT
from kernels.hstu_attention.reference import check_inputs as check_shapes

# Read when the kernels are decorated, as triton.jit itself does. It must be set before triton
# is first imported (torch.utils.flop_counter imports it), so tests set it in tests/conftest.py.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Inline PTX (add.sat.f32 in `saturated_sum`, tanh.approx.f32 in `tanh_approx`): the interpreter
# runs none, and computes the same functions in plain Triton instead.
INLINE_PTX = tl.constexpr(not INTERPRET)
# ln(x) / 0.301 = log2(x) * (ln 2 / 0.301)
_LOG2_TO_BUCKET = tl.constexpr(math.log(2.0) / TIME_BUCKET_INCREMENT)
# log2(1 + x) on [0, 1), least squares on Chebyshev nodes: max error 1.5e-5 (3.3e-5 buckets).
_L0 = tl.constexpr(1.4354105898339853e-05)
_L1 = tl.constexpr(1.4415927069108978)
_L2 = tl.constexpr(-0.707256361964166)
_L3 = tl.constexpr(0.41156680901966647)
_L4 = tl.constexpr(-0.18983640648267427)
_L5 = tl.constexpr(0.0439295708307846)
# Polynomial + float32 rounding stay below 1e-4 buckets; 1e-3 leaves a wide margin.
_EDGE_WINDOW = tl.constexpr(1e-3)
# x + 1.5 * 2^23 rounds x (|x| < 2^22) to an integer held in the low mantissa bits.
_ROUND_MAGIC = tl.constexpr(12582912.0)
_ROUND_MAGIC_BITS = tl.constexpr(0x4B400000)


@triton.jit
def tanh_approx(x):
    """tanh(x) for the 16-bit paths: tanh.approx.f32, one MUFU op with ~6e-4 relative error, far
    below bf16's rounding; under the interpreter 2 sigmoid(2x) - 1, so CPU tests run the same
    algebra around it (tests/unit/test_kernels_triton.py, with fast math forced)."""
    if INLINE_PTX:
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:
        return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def silu(x, FAST: tl.constexpr):
    """silu(s) = s sigmoid(s) from the kernels' logits x = s * logit_scale (see `logit_scale`):
    with FAST, x = s / 2 and silu(s) = x (1 + tanh(x)): one MUFU op and one FFMA."""
    if FAST:
        return x + x * tanh_approx(x)
    else:
        return x * tl.sigmoid(x)


@triton.jit
def silu_grad(x, FAST: tl.constexpr):
    """g with silu'(s) = g * logit_scale, from x = s * logit_scale (`silu_and_grad` without silu:
    with FAST, a (1 + x - x th), one op fewer than through silu(s))."""
    if FAST:
        th = tanh_approx(x)
        a = th + 1.0
        return a * (x - x * th) + a
    else:
        sig = tl.sigmoid(x)
        return sig + x * sig * (1.0 - sig)


@triton.jit
def silu_and_grad(x, FAST: tl.constexpr):
    """(silu(s), g) from x = s * logit_scale, with silu'(s) = g * logit_scale: dS = dP * g, the
    scale applied once to the gradients (it rides on alpha, which the host scales with the weights).

    silu'(s) = sig (1 + s (1 - sig)); with FAST, sig = (1 + th) / 2 for th = tanh(x), x = s / 2, so
    2 silu'(s) = (1 + th)(1 + x - x th) = a (2x - p) + a, a = 1 + th, p = x + x th = silu(s): both
    for one MUFU op and four FMA-class ops per logit.
    """
    if FAST:
        th = tanh_approx(x)
        p = x + x * th
        a = th + 1.0
        return p, a * (2.0 * x - p) + a
    else:
        sig = tl.sigmoid(x)
        p = x * sig
        return p, sig + p * (1.0 - sig)


@triton.jit
def split_time(ts, ts_base):
    """int64 timestamps -> float32 (hi, lo) with ts - ts_base = hi * 2^23 + lo, lo in [0, 2^23).

    Both parts are exact floats while |ts - ts_base| < 2^46, and so are the differences of two
    of them. Done on [rows] and [cols] vectors, so the tile never holds 64-bit values.
    """
    rel = ts - ts_base
    return (rel >> 23).to(tl.float32), (rel & 0x7FFFFF).to(tl.float32)


@triton.jit
def query_times(TS, REQ_TS, offs_m, seq_len):
    """int64 time each query row is scored at: ts[i + 1], and the request time for the last row.

    TS and REQ_TS point at the sequence's first timestamp and its request time. Padded rows
    (i >= n_b) take the request time too, so their (never stored) logits stay finite and their
    buckets are the last real row's.
    """
    nxt = tl.load(TS + tl.minimum(offs_m + 1, seq_len - 1))
    return tl.where(offs_m + 1 < seq_len, nxt, tl.load(REQ_TS))


@triton.jit
def time_bucket(dt_hi, dt_lo, THR, num_buckets):
    """Bucket (int32) of the gaps dt_hi * 2^23 + dt_lo (exact float32 parts); THR: `bucket_thresholds`."""
    gap = dt_hi * 8388608.0 + dt_lo  # rounded, but never changes sign
    mag = tl.maximum(tl.abs(gap), 1.0)
    bits = mag.to(tl.int32, bitcast=True)
    expo = (bits >> 23) - 127
    x = ((bits & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True) - 1.0  # mantissa - 1, in [0, 1)
    log2_mant = _L0 + x * (_L1 + x * (_L2 + x * (_L3 + x * (_L4 + x * _L5))))
    expo_f = (expo + _ROUND_MAGIC_BITS).to(tl.float32, bitcast=True) - _ROUND_MAGIC  # int -> float, no I2F
    t = (expo_f + log2_mant) * _LOG2_TO_BUCKET
    rounded = t + _ROUND_MAGIC
    nearest = rounded.to(tl.int32, bitcast=True) - _ROUND_MAGIC_BITS
    nearest_f = rounded - _ROUND_MAGIC
    near = tl.abs(t - nearest_f) < _EDGE_WINDOW
    floor_t = tl.where(t < nearest_f, nearest - 1, nearest)
    edge = tl.minimum(tl.maximum(nearest, 0), num_buckets + 1)
    # Only lanes next to an edge read the table. |gap| >= thr exactly: the sign of
    # (s*dt_hi - thr_hi) * 2^23 + (s*dt_lo - thr_lo), whose parts are exact (the second below 2^24 in
    # magnitude, hence the 23-bit split) and whose rounding cannot flip the sign.
    thr_hi = tl.load(THR + edge, mask=near, other=0.0)
    thr_lo = tl.load(THR + (num_buckets + 2) + edge, mask=near, other=0.0)
    neg = gap < 0
    over = (tl.where(neg, -dt_hi, dt_hi) - thr_hi) * 8388608.0 + (tl.where(neg, -dt_lo, dt_lo) - thr_lo)
    bucket = tl.where(near, tl.where(over >= 0, edge, edge - 1), floor_t)
    return tl.minimum(tl.maximum(bucket, 0), num_buckets)


@triton.jit
def add_rab(s, rel, dt_hi, dt_lo, POS_W, TS_W, THR, max_seq_len, num_buckets,
            HAS_POS: tl.constexpr, HAS_TS: tl.constexpr):
    """s + rab for one tile; rel = j - i (int32), ts[i+1] - ts[j] = dt_hi * 2^23 + dt_lo (float32).

    Returns (s + rab, bucket); bucket is the time bucket when HAS_TS (the backward reduces the
    time-weight gradient by it), else an unused zero.
    """
    if HAS_POS:
        # Padded rows (i >= n_b) and masked pairs (j > i) can index outside [0, 2N-2]; clamping
        # keeps the gather in bounds, and those entries are zeroed or never stored later.
        idx = tl.minimum(tl.maximum(rel + max_seq_len - 1, 0), 2 * max_seq_len - 2)
        s += tl.load(POS_W + idx).to(tl.float32)
    if HAS_TS:
        bucket = time_bucket(dt_hi, dt_lo, THR, num_buckets)
        s += tl.load(TS_W + bucket).to(tl.float32)
    else:
        bucket = tl.zeros(s.shape, dtype=tl.int32)
    return s, bucket


@triton.jit
def exact_rab(s, offs_q, offs_k, k_ok, q_hi, q_lo, k_hi, k_lo, ts_base, seq_len, TS, REQ_TS, POS_W, TS_W, THR,
              max_seq_len, num_buckets, HAS_POS: tl.constexpr, HAS_TS: tl.constexpr, KEYS_FIRST: tl.constexpr):
    """(s + rab, bucket) computed per logit: any timestamps, any tile (`add_rab`).

    Rows are queries (split times q_hi, q_lo given per program; the keys' read here), or with
    KEYS_FIRST keys (k_hi, k_lo given; the queries' times read here).
    """
    if HAS_TS:
        if KEYS_FIRST:
            tq_hi, tq_lo = split_time(query_times(TS, REQ_TS, offs_q, seq_len), ts_base)
            dt_hi = tq_hi[None, :] - k_hi[:, None]
            dt_lo = tq_lo[None, :] - k_lo[:, None]
        else:
            tk_hi, tk_lo = split_time(tl.load(TS + offs_k, mask=k_ok, other=0), ts_base)
            dt_hi = q_hi[:, None] - tk_hi[None, :]
            dt_lo = q_lo[:, None] - tk_lo[None, :]
    else:
        dt_hi = 0.0
        dt_lo = 0.0
    if KEYS_FIRST:
        rel = offs_k[:, None] - offs_q[None, :]
    else:
        rel = offs_k[None, :] - offs_q[:, None]
    return add_rab(s, rel, dt_hi, dt_lo, POS_W, TS_W, THR, max_seq_len, num_buckets, HAS_POS, HAS_TS)


@triton.jit
def tile_buckets(EDGES, t_stride, row_first, row_last, col_first, col_last, num_buckets,
                 EDGE_PAD: tl.constexpr):
    """(lo, hi): the smallest and largest time bucket of a far tile (every key before every query).

    Buckets grow with the query row and shrink with the key, so they are those of the pairs
    (row_first, col_last) and (row_last, col_first): the count of edges k with J[k, row] >= col.
    EDGES points at the sequence's first token of the [K, T] edge table (`rab_tables.edge_table`).
    """
    ks = tl.arange(0, EDGE_PAD)
    k_ok = ks < num_buckets
    lo = tl.sum((tl.load(EDGES + ks * t_stride + row_first, mask=k_ok, other=-1) >= col_last).to(tl.int32))
    hi = tl.sum((tl.load(EDGES + ks * t_stride + row_last, mask=k_ok, other=-1) >= col_first).to(tl.int32))
    return lo, hi


# The diagonal band (`rab_tables.diagonal_bias`): the bias of query i and key j,
# j <= i < j + BAND_WIDTH, of the sequence starting at token a, at
#     a * BAND_TOKEN + i * BAND_ROW + j + BAND_ROW     (i, j within the sequence)
# so a tile's weights are one affine block with unit key stride and 16-aligned rows (the row
# coefficient and the sequence's base are multiples of 16). Row i's entries lie at
# [257 i + 1, 257 i + 256] past the base, disjoint, and a sequence of n tokens ends before
# 257 n <= BAND_TOKEN n: reads of keys past the query (j > i, causal-masked later) land in the
# next row, the next sequence or BAND_SLACK, never outside the buffer.
BAND_ROW = tl.constexpr(256)
BAND_TOKEN = tl.constexpr(272)
# Pairs i - j < BAND_WIDTH: the largest diagonal tile spans i - j <= BLOCK_M + BLOCK_N - 2 = 254,
# and far tiles that near the diagonal read the band too (`first_band_block`).
BAND_WIDTH = tl.constexpr(256)
BAND_SLACK = 128  # a diagonal tile's keys reach at most a block (<= 128) past its last query


@triton.jit
def band_bias(s, BAND, offs_row, row_ok, col_start, seq_len, KEYS_FIRST: tl.constexpr,
                   BLOCK_COL: tl.constexpr):
    """s + pos_w[j - i + N - 1] + ts_w[bucket(i, j)] for a diagonal tile (the positional term only
    with positional weights), one block of the band (BAND at the sequence's base) whatever the
    number of edges the tile spans. Rows are queries, or with KEYS_FIRST keys
    (the columns, queries, masked past the sequence: their addresses would run past it)."""
    cols = col_start + tl.arange(0, BLOCK_COL)
    if KEYS_FIRST:
        # Loaded as [queries, keys] (contiguous keys: vector loads), then transposed.
        ptrs = BAND + cols[:, None] * BAND_ROW + offs_row[None, :] + BAND_ROW
        weights = tl.trans(tl.load(ptrs, mask=(cols < seq_len)[:, None], other=0.0))
    else:
        ptrs = BAND + offs_row[:, None] * BAND_ROW + cols[None, :] + BAND_ROW
        weights = tl.load(ptrs, mask=row_ok[:, None], other=0.0)
    return s + weights.to(tl.float32)


@triton.jit
def first_band_block(row_last, BLOCK: tl.constexpr):
    """The first key block (a multiple of BLOCK) whose pairs with the query rows up to row_last all
    lie in the band (i - j < BAND_WIDTH). Far tiles spanning many edges from there to the diagonal
    take their bias from it, as the diagonal tiles do, rather than a loop over their edges: on the
    benchmark's inputs 84% of those tiles' edges at N 4096, all of them at 256."""
    return tl.cdiv(tl.maximum(row_last - (BAND_WIDTH - 1), 0), BLOCK) * BLOCK


@triton.jit
def band_query_end(col_first, seq_len, first, BLOCK_Q: tl.constexpr):
    """For [keys, queries] tiles (dk/dv) of keys from col_first, the end of the query blocks from
    `first` (a multiple of BLOCK_Q) whose pairs all lie in the band (`first_band_block` seen from
    the keys): a multiple of BLOCK_Q from `first`, at most past the sequence's last block."""
    end = tl.maximum(tl.minimum(col_first + BAND_WIDTH - BLOCK_Q + 1, seq_len), first)
    return first + tl.cdiv(end - first, BLOCK_Q) * BLOCK_Q


# Tile kinds of `scaled_logits`.
FAR_TILE = tl.constexpr(0)  # every key before every query, few edges: unrolled
DIAGONAL_TILE = tl.constexpr(1)  # diagonal tiles: weights from the band (`band_bias`)
MANY_EDGE_TILE = tl.constexpr(2)  # far tiles spanning more than MAX_EDGES edges: a loop merging equal edges


@triton.jit
def tile_time_range(EDGES, t_stride, row_first, row_last, col_first, col_last, num_buckets,
                    HAS_TS: tl.constexpr, MASKED: tl.constexpr, EDGE_PAD: tl.constexpr):
    """(lo, hi): the buckets a fast-path tile's time weights select among (`add_time_bias`) for
    query rows row_first .. row_last and keys col_first .. col_last: a far tile's (`tile_buckets`),
    a diagonal tile's (MASKED) from 0 (j = i) up; none without time weights."""
    if HAS_TS:
        lo, hi = tile_buckets(EDGES, t_stride, row_first, row_last, col_first, col_last, num_buckets, EDGE_PAD)
        if MASKED:
            lo = 0
    else:
        lo = 0
        hi = 0
    return lo, hi


@triton.jit
def spans_many_edges(EDGES, t_stride, row_first, row_last, col_first, col_last, num_buckets,
                     MAX_EDGES: tl.constexpr, EDGE_PAD: tl.constexpr):
    """Whether a far tile spans more edges than `add_time_bias` unrolls: the tiles the kernels'
    many-edge loops (KIND MANY_EDGE_TILE) redo."""
    lo, hi = tile_buckets(EDGES, t_stride, row_first, row_last, col_first, col_last, num_buckets, EDGE_PAD)
    return hi - lo > MAX_EDGES


@triton.jit
def unless_many_edges(ok, offs, lo, hi, HAS_TS: tl.constexpr, KIND: tl.constexpr, MAX_EDGES: tl.constexpr):
    """The row mask `ok`, all false for a far tile spanning more edges than the unrolled ones.

    `add_time_bias` gives such a tile a 0-edge tile's bias, and a many-edge loop redoes it; its
    caller masks one load of the tile (V or dout) with this, which zeroes the tile's contribution
    here: a predicate per load, not a select per logit.
    """
    if HAS_TS and KIND == FAR_TILE:
        return ok & (offs * 0 + hi - lo <= MAX_EDGES)
    else:
        return ok


@triton.jit
def exact_row_times(TS, REQ_TS, offs_row, row_ok, seq_len, EXACT_TS: tl.constexpr, KEYS_FIRST: tl.constexpr):
    """(ts_base, hi, lo) for the exact path (`exact_rab`): the tile rows' times split once per
    program (`split_time`), rebased to the sequence's first event: query rows at the time they
    are scored at (`query_times`), or with KEYS_FIRST key rows at their own. Unused zeros unless
    EXACT_TS (time weights on the exact path)."""
    if EXACT_TS:
        ts_base = tl.load(TS)
        if KEYS_FIRST:
            hi, lo = split_time(tl.load(TS + offs_row, mask=row_ok, other=0), ts_base)
        else:
            hi, lo = split_time(query_times(TS, REQ_TS, offs_row, seq_len), ts_base)
    else:
        ts_base = 0
        hi = 0.0
        lo = 0.0
    return ts_base, hi, lo


@triton.jit
def skewed_position_block(POS_SKEW, skew_stride, col0, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
                          KEYS_FIRST: tl.constexpr):
    """The skewed table's block for a [queries, keys] tile: pos_w[j - i + N - 1] (times the host's
    `logit_scale`), col0 = n_start - m_start + N - 1 + pad (a multiple of 16); with KEYS_FIRST a [keys,
    queries] tile of the keys-first table, col0 = m_start - n_start + pad."""
    if KEYS_FIRST:
        # The keys-first table (`rab_tables.skewed_positions_keys_first`): rows are keys.
        rk = tl.arange(0, BLOCK_K)
        cq = tl.max_contiguous(tl.multiple_of(col0 + tl.arange(0, BLOCK_Q), 16), BLOCK_Q)
        return tl.load(POS_SKEW + rk[:, None] * skew_stride + cq[None, :]).to(tl.float32)
    else:
        rq = tl.arange(0, BLOCK_Q)
        ck = tl.max_contiguous(tl.multiple_of(col0 + tl.arange(0, BLOCK_K), 16), BLOCK_K)
        return tl.load(POS_SKEW + rq[:, None] * skew_stride + ck[None, :]).to(tl.float32)


@triton.jit
def position_bias(POS_SKEW, skew_stride, skew_pad, m_start, n_start, max_seq_len,
                  HAS_POS: tl.constexpr, HAS_TS: tl.constexpr, KIND: tl.constexpr, KEYS_FIRST: tl.constexpr,
                  BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    """pos_w[j - i + N - 1] for a fast-path tile (one aligned block of the skewed table), or 0:
    also for a diagonal tile with time weights, whose positional term is in the band with its
    time term (`band_bias`), one block where two would be live at once."""
    if HAS_POS and not (HAS_TS and KIND == DIAGONAL_TILE):
        if KEYS_FIRST:
            col0 = m_start - n_start + skew_pad
        else:
            col0 = n_start - m_start + max_seq_len - 1 + skew_pad
        return skewed_position_block(POS_SKEW, skew_stride, col0, BLOCK_Q, BLOCK_K, KEYS_FIRST)
    else:
        return 0.0


@triton.jit
def saturated_sum(row_term, col_term):
    """clamp(row_term[:, None] + col_term[None, :], 0, 1): on the GPU one add.sat.f32 per element
    (the interpreter runs no inline assembly)."""
    a, b = tl.broadcast(row_term[:, None], col_term[None, :])
    if INLINE_PTX:
        return tl.inline_asm_elementwise("add.rn.sat.f32 $0, $1, $2;", "=r,r,r", [a, b], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.minimum(tl.maximum(a + b, 0.0), 1.0)


@triton.jit
def edge_row(offs_row, row_ok, edge, live, EDGES, t_stride, KEYS_FIRST: tl.constexpr):
    """The tile rows' values of one edge: J[edge, i] (query rows; -1 where not live) or, with
    KEYS_FIRST, I[edge, j] (key rows; 2^30 where not live): either way, passing nothing."""
    if KEYS_FIRST:
        return tl.load(EDGES + (edge - 1) * t_stride + offs_row, mask=row_ok & live, other=1 << 30)
    else:
        return tl.load(EDGES + (edge - 1) * t_stride + offs_row, mask=row_ok & live, other=-1)


@triton.jit
def edge_row_in_tile(offs_row, row_ok, edge, live, EDGES, t_stride, col_start, KEYS_FIRST: tl.constexpr,
                     BLOCK_COL: tl.constexpr):
    """`edge_row` clamped to the tile's columns col_start .. col_start + BLOCK_COL - 1: the same
    pairs pass (`passing_pairs`), and two edges passing the same pairs of the tile have equal
    rows, however far outside the tile their values differ (the edge loops merge such runs)."""
    values = edge_row(offs_row, row_ok, edge, live, EDGES, t_stride, KEYS_FIRST)
    if KEYS_FIRST:
        return tl.minimum(tl.maximum(values, col_start), col_start + BLOCK_COL)
    else:
        return tl.minimum(tl.maximum(values, col_start - 1), col_start + BLOCK_COL - 1)


@triton.jit
def passing_pairs(values, col_rel, col_start, KEYS_FIRST: tl.constexpr):
    """1.0 for the tile's pairs past an edge, else 0.0, from its rows' values (`edge_row`): query
    rows pass keys j <= J (col_rel <= J - col_start), key rows pass queries i >= I. The indicator
    is clamp(row term -/+ col_rel, 0, 1) of integers held exactly in float32: per logit one
    saturating add and no predicate (compares came out as bit masks packed around the selects)."""
    if KEYS_FIRST:
        return saturated_sum((col_start - values + 1).to(tl.float32), col_rel)
    else:
        return saturated_sum((values - col_start + 1).to(tl.float32), -col_rel)


@triton.jit
def pass_edge(s, offs_row, row_ok, col_rel, col_start, edge, live, EDGES, t_stride, TS_W, num_buckets,
              KEYS_FIRST: tl.constexpr):
    """s + (ts_w[edge] - ts_w[edge - 1]) for the tile's pairs past `edge` (key j <= J[edge, i]).

    A pair's bucket is lo plus the edges it passes (passing edge k + 1 implies passing k), so
    from ts_w[lo] the steps telescope to ts_w[bucket] (to float rounding). Rows are queries and
    EDGES the edge table (j <= J), or with KEYS_FIRST keys and EDGES `first_query_table` (i >= I):
    either way one value per row and edge, and per logit one saturating add (`passing_pairs`)
    and one FFMA. Rows where `live` is false read nothing and pass nothing (an edge past the
    tile's range).
    """
    values = edge_row(offs_row, row_ok, edge, live, EDGES, t_stride, KEYS_FIRST)
    passing = passing_pairs(values, col_rel, col_start, KEYS_FIRST)
    step = tl.load(TS_W + tl.minimum(edge, num_buckets)).to(tl.float32) - \
        tl.load(TS_W + tl.minimum(edge, num_buckets) - 1).to(tl.float32)
    return s + step * passing


@triton.jit
def time_weights_unrolled(s, offs_row, row_ok, col_rel, col_start, lo, hi, EDGES, t_stride, TS_W, num_buckets,
                          KEYS_FIRST: tl.constexpr, COUNT: tl.constexpr):
    """Edges lo+1 .. lo+COUNT (those <= hi) in increasing order, unrolled: straight-line code."""
    for e in tl.static_range(COUNT):
        edge = lo + 1 + e
        s = pass_edge(s, offs_row, row_ok, col_rel, col_start, edge, offs_row * 0 + edge <= hi, EDGES, t_stride,
                      TS_W, num_buckets, KEYS_FIRST)
    return s


@triton.jit
def time_weights_loop(s, offs_row, row_ok, col_rel, col_start, lo, hi, EDGES, t_stride, TS_W,
                      KEYS_FIRST: tl.constexpr, BLOCK_COL: tl.constexpr):
    """Every edge lo+1 .. hi, in a loop: for the far tiles spanning more than the unrolled edges.

    Consecutive edges whose rows pass the same pairs of the tile (`edge_row_in_tile`: a long pause
    inside the tile puts many edges on the same key) have their steps summed and applied once, at
    a per-edge cost of one compare-and-reduce over the rows rather than a saturating add and an
    FFMA per logit. On the benchmark's inputs at N 4096 the forward's many-edge tiles beyond the
    band span 1,856 edges in 974 such runs (1,341 runs when rows were not clamped to the tile:
    `benchmarks/attention.py --census`).
    """
    cur = edge_row_in_tile(offs_row, row_ok, lo + 1, offs_row >= 0, EDGES, t_stride, col_start, KEYS_FIRST,
                           BLOCK_COL)
    pending = 0.0
    for edge in range(lo + 1, hi + 1):
        nxt = edge_row_in_tile(offs_row, row_ok, edge + 1, offs_row * 0 + edge + 1 <= hi, EDGES, t_stride, col_start,
                               KEYS_FIRST, BLOCK_COL)
        pending += tl.load(TS_W + edge).to(tl.float32) - tl.load(TS_W + edge - 1).to(tl.float32)
        # The last edge's next reads the sentinel: it ends its run unless every row passes
        # nothing anyway.
        if tl.min((cur == nxt).to(tl.int32)) == 0:
            s += pending * passing_pairs(cur, col_rel, col_start, KEYS_FIRST)
            pending = 0.0
        cur = nxt
    return s


@triton.jit
def scaled_logits(qk, alpha, pos, offs_row, row_ok, col_start, lo, hi, EDGES, t_stride, BAND, seq_len, TS_W,
                  num_buckets, HAS_TS: tl.constexpr, KEYS_FIRST: tl.constexpr, KIND: tl.constexpr,
                  MAX_EDGES: tl.constexpr, PROBE_EDGES: tl.constexpr, BLOCK_COL: tl.constexpr):
    """alpha * qk + pos + ts_w[bucket] on the fast path (sorted timestamps; the tables of
    `rab_tables`): exactly the reference's bias, the positional term riding on the scaling's
    FFMA, the time term by `add_time_bias`."""
    return add_time_bias(qk * alpha + pos, offs_row, row_ok, col_start, lo, hi, EDGES, t_stride, BAND, seq_len, TS_W,
                         num_buckets, HAS_TS, KEYS_FIRST, KIND, MAX_EDGES, PROBE_EDGES, BLOCK_COL)


@triton.jit
def add_time_bias(s, offs_row, row_ok, col_start, lo, hi, EDGES, t_stride, BAND, seq_len, TS_W, num_buckets,
                  HAS_TS: tl.constexpr, KEYS_FIRST: tl.constexpr, KIND: tl.constexpr, MAX_EDGES: tl.constexpr,
                  PROBE_EDGES: tl.constexpr, BLOCK_COL: tl.constexpr):
    """s + ts_w[bucket] for a fast-path tile (a [rows, BLOCK_COL] float32 tile). Rows are queries
    (offs_row, row_ok; the columns start at key col_start) or with KEYS_FIRST keys (EDGES is then
    `first_query_table`); seq_len bounds the columns.

    Far tiles (KIND FAR_TILE) select among the tile's buckets lo .. hi, branching once per tile on
    their edge count: none (one add of the tile's one weight per logit), up to 2, up to MAX_EDGES
    (unrolled, per edge and logit one saturating add and one FFMA: `pass_edge`). A far tile
    spanning more gets the tile's lowest weight only (wrong but finite logits, at a 0-edge tile's
    cost); its caller zeroes the tile's contribution (by masking a V or dout load: a predicate per
    load, not a select per logit) and redoes it in a loop over its edges (MANY_EDGE_TILE).
    Diagonal tiles (DIAGONAL_TILE), which span ~38 edges each on the benchmark's inputs, read their
    weights from the band (`band_bias`). PROBE_EDGES >= 0 compiles one far-tile class
    only (benchmarks/kernel_static.py; never launched).
    """
    # The edges add onto the logits themselves: a loop carrying a tile of its own got a layout
    # other than the dot's from the compiler (32 rows a thread, 255 registers kernel-wide).
    if HAS_TS:
        if KIND == DIAGONAL_TILE:
            s = band_bias(s, BAND, offs_row, row_ok, col_start, seq_len, KEYS_FIRST, BLOCK_COL)
        else:
            s += tl.load(TS_W + lo).to(tl.float32)
            col_rel = tl.arange(0, BLOCK_COL).to(tl.float32)
            if KIND == FAR_TILE:
                if PROBE_EDGES > 0:
                    s = time_weights_unrolled(s, offs_row, row_ok, col_rel, col_start, lo, hi, EDGES, t_stride, TS_W,
                                              num_buckets, KEYS_FIRST, PROBE_EDGES)
                elif PROBE_EDGES < 0:
                    # A tile spanning more than MAX_EDGES runs as one spanning none (it is redone).
                    hi = tl.where(hi - lo <= MAX_EDGES, hi, lo)
                    if hi > lo:
                        if hi - lo <= 2:
                            s = time_weights_unrolled(s, offs_row, row_ok, col_rel, col_start, lo, hi, EDGES,
                                                      t_stride, TS_W, num_buckets, KEYS_FIRST, 2)
                        else:
                            s = time_weights_unrolled(s, offs_row, row_ok, col_rel, col_start, lo, hi, EDGES,
                                                      t_stride, TS_W, num_buckets, KEYS_FIRST, MAX_EDGES)
            else:
                s = time_weights_loop(s, offs_row, row_ok, col_rel, col_start, lo, hi, EDGES, t_stride, TS_W,
                                      KEYS_FIRST, BLOCK_COL)
    return s


@functools.lru_cache(maxsize=None)
def _threshold_values(num_buckets: int) -> tuple[int, ...]:
    """thr[k] = smallest integer d >= 1 with floor(ln(d) / 0.301) >= k, for k = 0..num_buckets+1.

    Evaluated with the reference's float64 expression, so the kernel's buckets match its edges.
    Edges beyond 2**62 are unreachable and stored as 2**63.
    """

    def bucket(d: int) -> int:
        return math.floor(math.log(float(d)) / TIME_BUCKET_INCREMENT)

    out = [1]
    for k in range(1, num_buckets + 2):
        lo, hi = 1, 2**62
        if bucket(hi) < k:
            out.append(2**63)
            continue
        while lo < hi:  # smallest d with bucket(d) >= k; bucket is non-decreasing in d
            mid = (lo + hi) // 2
            if bucket(mid) >= k:
                hi = mid
            else:
                lo = mid + 1
        out.append(lo)
    return tuple(out)


_THRESHOLD_CACHE: dict[tuple[int, str], torch.Tensor] = {}


def bucket_thresholds(num_buckets: int, device: torch.device) -> torch.Tensor:
    """float32 [2, num_buckets + 2] table for `time_bucket`: rows thr >> 23 and thr & (2^23 - 1)."""
    key = (num_buckets, str(device))
    if key not in _THRESHOLD_CACHE:
        values = _threshold_values(num_buckets)
        parts = [[float(v >> 23) for v in values], [float(v & 0x7FFFFF) for v in values]]
        _THRESHOLD_CACHE[key] = torch.tensor(parts, dtype=torch.float32, device=device)
    return _THRESHOLD_CACHE[key]


def block_d(d: int) -> int:
    # tl.arange needs a power of two and tl.dot a reduction dim of at least 16; extra columns
    # are masked to zero on load.
    return max(16, triton.next_power_of_2(d))


def pad_head_dim(x: torch.Tensor) -> torch.Tensor:
    """x [T, H, D] -> [T, H, block_d(D)], zero-padded, when D is not already a block width.

    Observed on H100 (Triton 3.6, bf16): Dqk = 50 / Dv = 25 tiles, whose rows start at 2-byte
    offsets, gave illegal-address faults in the forward that compute-sanitizer did not
    reproduce (root cause not established). Power-of-two head dims passed every test, so odd
    head dims are run padded: an extra copy, only for those shapes.
    """
    d = x.shape[-1]
    width = block_d(d)
    return x if d == width else torch.nn.functional.pad(x, (0, width - d))


def last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    # Views of a fused [T, ...] projection keep their token/head strides; only d must be unit.
    return x if x.stride(-1) == 1 else x.contiguous()


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    norm: str,
    timestamps: torch.Tensor | None,
    pos_weights: torch.Tensor | None,
    ts_weights: torch.Tensor | None,
    request_timestamps: torch.Tensor | None = None,
) -> None:
    """The reference's input contract, without host syncs (offsets' values are not read)."""
    check_shapes(q, k, v, norm, timestamps, pos_weights, ts_weights, max_seq_len, request_timestamps,
                 seq_offsets.numel() - 1)
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"q, k, v must share one of float32/float16/bfloat16; got {q.dtype}, {k.dtype}, {v.dtype}")
    if seq_offsets.dim() != 1 or seq_offsets.numel() < 1 or seq_offsets.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"seq_offsets must be a 1-D int32/int64 [B+1] tensor, got {seq_offsets.dtype} {tuple(seq_offsets.shape)}"
        )


def rab_args(
    ref: torch.Tensor,
    seq_offsets: torch.Tensor,
    timestamps: torch.Tensor | None,
    request_timestamps: torch.Tensor | None,
    pos_weights: torch.Tensor | None,
    ts_weights: torch.Tensor | None,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(timestamps int64, request times int64 [B], pos_weights, ts_weights, thresholds, num_buckets),
    the weights times `scale` (`logit_scale`).

    An absent term gets a 1-element placeholder (never read: HAS_POS / HAS_TS are constexpr).
    Without request_timestamps each sequence's last query keeps its own time (the reference's
    default): its last timestamp, gathered on the device (no host sync).
    """
    dummy = ref.new_zeros(1)
    pos = (pos_weights if scale == 1.0 else pos_weights * scale).contiguous() if pos_weights is not None else dummy
    if ts_weights is None:
        return dummy.long(), dummy.long(), pos, dummy, dummy, 0
    assert timestamps is not None
    ts = timestamps.to(torch.int64).contiguous()
    if request_timestamps is None:
        last = (seq_offsets[1:].to(torch.int64) - 1).clamp(min=0, max=max(ts.numel() - 1, 0))
        request = ts[last] if ts.numel() else seq_offsets.new_zeros(seq_offsets.numel() - 1, dtype=torch.int64)
    else:
        request = request_timestamps.to(device=ts.device, dtype=torch.int64).contiguous()
    num_buckets = ts_weights.numel() - 1
    thr = bucket_thresholds(num_buckets, ref.device)
    return ts, request, pos, (ts_weights if scale == 1.0 else ts_weights * scale).contiguous(), thr, num_buckets


def fast_math(dtype: torch.dtype) -> bool:
    """tanh.approx-based silu on halved logits (`logit_scale`) for 16-bit inputs on the GPU;
    float32 keeps the 1e-4 path exact-ish."""
    return dtype != torch.float32 and not INTERPRET


def logit_scale(fast: bool) -> float:
    """What the kernels' logits are scaled by: with fast math they carry x = s / 2 (silu(s) =
    x (1 + tanh x) needs no other halving), so the host halves alpha and the bias weights (a power
    of two: exact but for float16 subnormals, below 6e-5, which lose their last bit). dq and dk,
    scaled by alpha, come out right; the rab-gradient kernel rescales its dS."""
    return 0.5 if fast else 1.0


def dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs must not silently drop to tf32 (10-bit mantissa) on the tensor cores: the
    # fp32 path is the one held to 1e-4 of the reference.
    return "ieee" if dtype == torch.float32 else "tf32"


def as_triton_configs(configs: list[dict[str, int]]) -> list[triton.Config]:
    """Launch-kwarg dicts (block sizes in capitals, num_warps, num_stages, optionally maxnreg: the
    registers per thread capped, PTX .maxnreg) -> triton.Config."""
    launch = ("num_warps", "num_stages", "maxnreg")
    return [
        triton.Config({k: v for k, v in c.items() if k not in launch},
                      num_warps=c["num_warps"], num_stages=c["num_stages"], maxnreg=c.get("maxnreg"))
        for c in configs
    ]


# The backward kernels' autotune key (each tuning per power-of-two length and bias layout).
BACKWARD_TUNE_KEY = ["tune_len", "BLOCK_DQK", "BLOCK_DV", "HAS_POS", "HAS_TS", "FAST_RAB", "DOT_PRECISION"]


def tune_key_len(max_seq_len: int) -> int:
    """Autotune bucket for max_seq_len: one tuning per power of two, not per exact length."""
    return triton.next_power_of_2(max_seq_len)
