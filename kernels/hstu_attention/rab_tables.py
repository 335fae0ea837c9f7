"""Host-side tables that turn the relative attention bias of far tiles into loads and compares.

Built in PyTorch (a few element-wise ops and one `searchsorted`) and shared by every head: the
time tables, which depend on the batch alone, once per training step for every layer and both
directions (`batch_memo`), the weight-bearing ones (band, positional tables) once per call. See
`../shared/kernel-rab-design.md` for the measurements behind the design.

- **Edge table** (time term). Within a sequence, timestamps are non-decreasing, so for query row
  i (scored at t_i = ts[i+1], the request time for the last row) the time bucket of key j is at
  least k exactly when j <= J[k, i], J[k, i] being the last key with ts[j] <= t_i - thr[k]
  (`triton_common._threshold_values`: the reference's own float64 edges). A bucket is then the
  count of edges a key passes, and the bias of a tile is chosen among the tile's few buckets by
  integer compares: no logarithm, no gather of a weight per logit, bucket for bucket the
  reference's. Stored [K, T] int32 (edge k = 1..K in row k - 1, -1 where no key qualifies), so
  the rows of one edge are one contiguous load.
- **Diagonal band** (the bias of the diagonal tiles). The tiles crossing the diagonal span ~38
  edges each on the benchmark's inputs (every bucket from 0 up to the tile's widest gap), so
  selecting by edges cost ~3 instructions per logit per edge there. Instead the band holds every
  pair's bias for i - BAND_WIDTH < j <= i, its time weight plus its positional one
  (`triton_common.band_bias` has the layout), written once per call by a small kernel (per
  pair a binary search over the integer thresholds: the reference's bucket exactly), and a
  diagonal tile reads it as one block. 1.1 KB a token (float32; 35 MB at 32k tokens).
- **Skewed positional table**. Row r holds the positional weights shifted by r:
  skew[r, x] = pos_w[x - r - pad] (zero outside), so the [rows, cols] tile of pos_w[j - i + N - 1]
  is the block skew[i - m_start, (n_start - m_start + N - 1 + pad) + c]: an affine, 16-element
  aligned block load (`pad` makes the column start a multiple of 16), like a K tile, instead of
  one clamped gather per logit. Rows up to `SKEW_ROWS`, the largest query block of any config.

With both tables no tile computes a logarithm or gathers a weight per logit: far tiles spanning
few edges unroll them, the diagonal tiles and the rare far tiles spanning more loop over their
edges (in a separate loop, so the far-tile loop stays straight-line and pipelined). The edge
table needs sorted timestamps; `edge_table` returns None when a sequence is not sorted (or a
request time precedes its sequence's last event, or times span more than 2^46), and the kernels
then use the exact per-logit path (`triton_common.add_rab`) for every tile (logged once).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import logging

import torch

import triton
import triton.language as tl

from kernels.hstu_attention.batch_memo import TIME_TABLES
from kernels.hstu_attention.reference import time_buckets
from kernels.hstu_attention.triton_common import (
    BAND_ROW, BAND_SLACK, BAND_TOKEN, BAND_WIDTH, INTERPRET, _threshold_values,
)

logger = logging.getLogger(__name__)

# The largest query block (BLOCK_M / BLOCK) among the kernels' configs.
SKEW_ROWS = 128
# Column alignment of the skewed table, in elements: 16 x 4 bytes is a 64-byte line segment, and
# any power of two up to it lets the compiler vectorize the block load.
SKEW_ALIGN = 16
# Keys are made unique per sequence as seq_id * 2^47 + (ts - first ts of the sequence).
_SEQ_SHIFT = 47
_MAX_REL_TIME = 2**46
_logged_fallback = False


@dataclasses.dataclass(frozen=True)
class SkewedPositions:
    table: torch.Tensor  # [SKEW_ROWS, width], the positional weights' dtype
    pad: int  # skew[r, x] = pos_w[x - r - pad]

    @property
    def row_stride(self) -> int:
        return self.table.stride(0)


_SKEW_INDEX: dict[tuple[bool, int, str], torch.Tensor] = {}


def _skewed(pos_weights: torch.Tensor, max_seq_len: int, pad: int, width: int, keys_first: bool) -> torch.Tensor:
    """[SKEW_ROWS, width] table of pos_w[idx], zero where idx is outside [0, 2N - 2]: one gather
    from the weights with a zero appended, through an index built once per (layout, N, device)
    (the table is rebuilt every call, as the weights change every step)."""
    key = (keys_first, max_seq_len, str(pos_weights.device))
    if key not in _SKEW_INDEX:
        cols = torch.arange(width, device=pos_weights.device)[None, :]
        rows = torch.arange(SKEW_ROWS, device=pos_weights.device)[:, None]
        idx = rows - cols + max_seq_len - 1 + pad if keys_first else cols - rows - pad
        outside = (idx < 0) | (idx >= 2 * max_seq_len - 1)
        _SKEW_INDEX[key] = torch.where(outside, 2 * max_seq_len - 1, idx).contiguous()
    return torch.cat([pos_weights, pos_weights.new_zeros(1)])[_SKEW_INDEX[key]]


def skewed_positions(pos_weights: torch.Tensor, max_seq_len: int) -> SkewedPositions:
    """The positional weights laid out so that every tile's bias is one aligned block load."""
    # Tiles at the diagonal reach n_start - m_start up to a block (128) past it plus a block of
    # keys (128): `pad` keeps their columns >= 0, and a multiple of SKEW_ALIGN at the tile start.
    reach = 2 * SKEW_ROWS
    pad = reach + (-(max_seq_len - 1 + reach)) % SKEW_ALIGN
    width = -(-(max_seq_len - 1 + pad + reach) // SKEW_ALIGN) * SKEW_ALIGN
    return SkewedPositions(_skewed(pos_weights, max_seq_len, pad, width, keys_first=False), pad)


def skewed_positions_keys_first(pos_weights: torch.Tensor, max_seq_len: int) -> SkewedPositions:
    """The same for [keys, queries] tiles (the dk/dv kernel): row a holds the weights reversed and
    shifted by a, skew[a, y] = pos_w[a - y + N - 1 + pad], so the tile of key n_start + a and query
    m_start + b is the block at column (m_start - n_start + pad) + b, again contiguous and aligned."""
    pad = 2 * SKEW_ROWS  # a multiple of SKEW_ALIGN: m_start - n_start + pad >= 0 down to -2 blocks
    width = -(-(max_seq_len - 1 + pad + 2 * SKEW_ROWS) // SKEW_ALIGN) * SKEW_ALIGN
    return SkewedPositions(_skewed(pos_weights, max_seq_len, pad, width, keys_first=True), pad)


TokenSequences = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # `_token_sequences`: seq_id, starts, lengths


def _token_sequences(seq_offsets: torch.Tensor, num_tokens: int) -> TokenSequences:
    """(seq_id [T], starts [B], lengths [B]) as int64, without a host sync (the output size is
    the token count, known on the host)."""
    starts = seq_offsets[:-1].to(torch.int64)
    lengths = seq_offsets[1:].to(torch.int64) - starts
    seq_id = torch.repeat_interleave(torch.arange(lengths.numel(), device=seq_offsets.device), lengths,
                                     output_size=num_tokens)
    return seq_id, starts, lengths


def _query_times(ts: torch.Tensor, request: torch.Tensor, seq_id: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """t_i = ts[i + 1] within the sequence, the request time for each sequence's last row."""
    nxt = torch.cat([ts[1:], ts.new_zeros(1)])
    is_last = torch.arange(1, ts.numel() + 1, device=ts.device) == ends[seq_id]
    return torch.where(is_last, request[seq_id], nxt)


_EDGE_THRESHOLDS: dict[tuple[int, str], torch.Tensor] = {}


def _edge_thresholds(num_buckets: int, device: torch.device) -> torch.Tensor:
    """int64 [num_buckets]: thr[1..K] (`_threshold_values`), capped at 2^47 (past any span the
    table takes), on `device`: built once per (K, device), not copied to the device per call."""
    key = (num_buckets, str(device))
    if key not in _EDGE_THRESHOLDS:
        values = [min(v, 2**_SEQ_SHIFT) for v in _threshold_values(num_buckets)[1:num_buckets + 1]]
        _EDGE_THRESHOLDS[key] = torch.tensor(values, dtype=torch.int64, device=device)
    return _EDGE_THRESHOLDS[key]


_SEARCH_THRESHOLDS: dict[tuple[int, str], torch.Tensor] = {}


def _search_thresholds(num_buckets: int, device: torch.device) -> torch.Tensor:
    """int64 [2^s]: thr[1..K] (`_edge_thresholds`) then 2^62, 2^s > K: the sorted table the band
    kernel's branchless binary search reads (s steps count the thresholds <= a gap, at most K)."""
    key = (num_buckets, str(device))
    if key not in _SEARCH_THRESHOLDS:
        size = triton.next_power_of_2(num_buckets + 1)
        values = torch.full((size,), 2**62, dtype=torch.int64, device=device)
        values[:num_buckets] = _edge_thresholds(num_buckets, device)
        _SEARCH_THRESHOLDS[key] = values
    return _SEARCH_THRESHOLDS[key]


@triton.jit
def _diagonal_bias_kernel(BAND, TS, T_QUERY, SEQ_ID, STARTS, THR, TS_W, POS_W, num_tokens, max_seq_len,
                          HAS_POS: tl.constexpr, SEARCH_STEPS: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                          WIDTH: tl.constexpr):
    """Band entries of BLOCK_ROWS query rows: for key j = i - d, d < WIDTH, in i's sequence, the
    weight of the count of thresholds <= t_i - ts[j] (the pair's bucket: timestamps sorted, so the
    gap is >= 0), plus pos_w[N - 1 - d] with HAS_POS."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_ok = rows < num_tokens
    start = tl.load(STARTS + tl.load(SEQ_ID + rows, mask=row_ok, other=0), mask=row_ok, other=0)
    t_query = tl.load(T_QUERY + rows, mask=row_ok, other=0)
    delta = tl.arange(0, WIDTH)
    keys = rows[:, None] - delta[None, :]
    ok = row_ok[:, None] & (keys >= start[:, None])
    gap = t_query[:, None] - tl.load(TS + keys, mask=ok, other=0)
    bucket = tl.zeros((BLOCK_ROWS, WIDTH), dtype=tl.int32)
    for level in tl.static_range(SEARCH_STEPS):
        step = 1 << (SEARCH_STEPS - 1 - level)
        bucket = tl.where(tl.load(THR + bucket + (step - 1)) <= gap, bucket + step, bucket)
    bias = tl.load(TS_W + bucket, mask=ok, other=0.0).to(tl.float32)
    if HAS_POS:
        # j in the sequence, so d <= i < N: the index is in [0, N - 1].
        bias += tl.load(POS_W + (max_seq_len - 1 - delta)[None, :], mask=ok, other=0.0).to(tl.float32)
    local = (rows - start)[:, None]
    # a * BAND_TOKEN + i * BAND_ROW + j + BAND_ROW with j = i - d (`triton_common.band_bias`).
    address = start[:, None] * BAND_TOKEN + local * (BAND_ROW + 1) + BAND_ROW - delta[None, :]
    tl.store(BAND + address, bias, mask=ok)


_BAND_BLOCK_ROWS = 8 if INTERPRET else 16


def band_size(num_tokens: int) -> int:
    """Elements of the band of a batch of num_tokens tokens."""
    return num_tokens * BAND_TOKEN.value + BAND_SLACK


def diagonal_bias(ts: torch.Tensor, t_query: torch.Tensor, sequences: TokenSequences, ts_weights: torch.Tensor,
                  pos_weights: torch.Tensor | None, max_seq_len: int) -> torch.Tensor:
    """The diagonal band (see the module doc) of sorted timestamps, float32: ts int64 [T], t_query
    the times the queries are scored at (`_query_times`), `sequences` the batch's
    `_token_sequences`. Zero-filled first: the kernels also read entries no pair owns (keys past
    the query, causal-masked later). One launch, no host sync."""
    num_tokens = ts.numel()
    band = torch.zeros(band_size(num_tokens), dtype=torch.float32, device=ts.device)
    if num_tokens == 0:
        return band
    seq_id, starts, _ = sequences
    thr = _search_thresholds(ts_weights.numel() - 1, ts.device)
    grid = (triton.cdiv(num_tokens, _BAND_BLOCK_ROWS),)
    _diagonal_bias_kernel[grid](band, ts, t_query, seq_id, starts, thr, ts_weights.contiguous(),
                                pos_weights.contiguous() if pos_weights is not None else ts_weights, num_tokens,
                                max_seq_len, HAS_POS=pos_weights is not None,
                                SEARCH_STEPS=thr.numel().bit_length() - 1, BLOCK_ROWS=_BAND_BLOCK_ROWS,
                                WIDTH=BAND_WIDTH.value)
    return band


def diagonal_bias_reference(ts: torch.Tensor, request: torch.Tensor, seq_offsets: torch.Tensor,
                            ts_weights: torch.Tensor, pos_weights: torch.Tensor | None, max_seq_len: int
                            ) -> torch.Tensor:
    """`diagonal_bias` from the reference's own bucket function (`reference.time_buckets`), pair
    by pair in PyTorch: the kernel's ground truth in tests."""
    band = torch.zeros(band_size(ts.numel()), dtype=torch.float32)
    offsets = seq_offsets.tolist()
    for b in range(len(offsets) - 1):
        start, end = offsets[b], offsets[b + 1]
        n = end - start
        if n == 0:
            continue
        t_query = torch.cat([ts[start + 1:end], request[b:b + 1].to(ts.dtype)])
        i = torch.arange(n)[:, None]
        j = i - torch.arange(BAND_WIDTH.value)[None, :]
        ok = j >= 0
        buckets = time_buckets(t_query[:, None] - ts[start + j.clamp(min=0)], ts_weights.numel() - 1)
        bias = ts_weights[buckets].float()
        if pos_weights is not None:
            bias = bias + pos_weights[(j - i + max_seq_len - 1).clamp(min=0)].float()
        address = start * BAND_TOKEN.value + i * BAND_ROW.value + j + BAND_ROW.value
        band[address[ok]] = bias[ok]
    return band


def edge_table(
    ts: torch.Tensor, request: torch.Tensor, seq_offsets: torch.Tensor, num_buckets: int
) -> torch.Tensor | None:
    """int32 [num_buckets, T]: J[k - 1, t] = the last key (index within the sequence) whose gap to
    query t is at least thr[k], or -1. None when the fast path cannot be used (see module doc).

    ts: int64 [T]; request: int64 [B] (the time the last row is scored at); one host sync (the
    sortedness check, which picks the path), none elsewhere.
    """
    found = _edge_table(ts, request, seq_offsets, num_buckets)
    return found.edges if found is not None else None


@dataclasses.dataclass(frozen=True)
class _TimeTables:
    """What `_edge_table` found for a batch of sorted timestamps: a function of the timestamps,
    request times and offsets alone, shared by every head, and by every layer and direction within
    a `batch_memo` scope."""

    edges: torch.Tensor  # `edge_table`
    reach: int  # edges past the first `reach` have thresholds above every span: all -1
    sequences: TokenSequences | None  # the batch's `_token_sequences` (None when it has no token)
    t_query: torch.Tensor | None  # `_query_times`
    seq_offsets: torch.Tensor

    @functools.cached_property
    def first_queries(self) -> torch.Tensor:
        """`first_query_table` of the edges (the dk/dv kernel's), built on first use."""
        return first_query_table(self.edges, self.seq_offsets, self.reach, self.sequences)



def _edge_table(
    ts: torch.Tensor, request: torch.Tensor, seq_offsets: torch.Tensor, num_buckets: int
) -> _TimeTables | None:
    """`edge_table` with what it computed on the way: edges past the first `reach` have
    thresholds above every query's span in the batch, so no key passes them and their rows are -1
    without a search (the same host sync reads the span)."""
    global _logged_fallback
    num_tokens = ts.numel()
    num_seqs = seq_offsets.numel() - 1
    device = ts.device
    if num_buckets < 1 or num_tokens == 0:
        return _TimeTables(torch.full((max(num_buckets, 1), num_tokens), -1, dtype=torch.int32, device=device), 0,
                           None, None, seq_offsets)
    sequences = _token_sequences(seq_offsets, num_tokens)
    seq_id, starts, lengths = sequences
    first = ts[starts.clamp(max=num_tokens - 1)][seq_id]
    rel = ts - first
    t_query = _query_times(ts, request, seq_id, starts + lengths)
    rel_query = t_query - first
    # No order between sequences: a sequence's first step is not a step.
    step = torch.where(torch.arange(num_tokens, device=device) == starts[seq_id], 0, torch.diff(ts, prepend=ts[:1]))
    ordered = ((step >= 0) & (rel_query >= rel) & (rel_query < _MAX_REL_TIME)).all()
    # The one sync: the largest span (>= 0 when ordered) or -1.
    span = int(torch.where(ordered, rel_query.max(), -1).item())
    if span < 0 or num_seqs >= 2**15:
        if not _logged_fallback:
            logger.info("hstu_attention: timestamps not sorted within a sequence (or a request time before its "
                        "last event, or a span over 2^46): the time bias uses the exact per-logit path")
            _logged_fallback = True
        return None
    # Edges 1 .. reach have thr <= the largest span; past them every row is -1.
    reach = bisect.bisect_right(_threshold_values(num_buckets), span, lo=1, hi=num_buckets + 1) - 1
    table = torch.full((num_buckets, num_tokens), -1, dtype=torch.int32, device=device)
    if reach > 0:
        thr = _edge_thresholds(num_buckets, device)[:reach]
        seq_key = seq_id << _SEQ_SHIFT
        keys = seq_key + rel  # strictly ordered across sequences, non-decreasing within one
        # The last key with ts[j] <= t_i - thr[k]; values below the sequence's first key stay in it.
        limit = (rel_query[None, :] - thr[:, None]).clamp(min=-1) + seq_key[None, :]
        last = torch.searchsorted(keys, limit, right=True) - 1
        table[:reach] = last - starts[seq_id][None, :]
    return _TimeTables(table, reach, sequences, t_query, seq_offsets)


def first_query_table(edges: torch.Tensor, seq_offsets: torch.Tensor, reach: int | None = None,
                      sequences: TokenSequences | None = None) -> torch.Tensor:
    """The edge table seen from the keys, for [keys, queries] tiles (the dk/dv kernel): int32
    [K, T], I[k - 1, j] = the first query (index within the sequence) whose edge-k key limit
    reaches key j, the sequence's length where none does.

    J[k, i] does not decrease with i (later queries are scored later), so j <= J[k, i] exactly
    when i >= I[k, j]: a key row's test against the tile's queries needs one value per row, as a
    query row's does with J (the kernels load a row's value, not a column's, per edge).
    Rows past `reach` (`_edge_table`: J all -1 there) are the sequences' lengths, unsearched;
    `sequences` (`_edge_table`'s) saves computing them again.
    """
    num_edges, num_tokens = edges.shape
    device = edges.device
    if num_tokens == 0:
        return edges.clone()
    reach = num_edges if reach is None else reach
    seq_id, starts, lengths = sequences if sequences is not None else _token_sequences(seq_offsets, num_tokens)
    first = lengths[seq_id].to(torch.int32).expand(num_edges, -1).contiguous()
    if reach > 0:
        local = torch.arange(num_tokens, device=device) - starts[seq_id]
        # Per edge row, one sorted run per sequence: seq_id * stride + (J + 1), with J + 1 in
        # [0, n] and n <= T (a bound the host knows without a sync).
        stride = num_tokens + 2
        runs = seq_id[None, :] * stride + edges[:reach].to(torch.int64) + 1
        wanted = (seq_id * stride + local + 1).expand(reach, -1).contiguous()
        first[:reach] = torch.searchsorted(runs, wanted) - starts[seq_id][None, :]
    return first


def far_tile_edge_counts(edges: torch.Tensor, seq_offsets: torch.Tensor, block_q: int, block_k: int) -> torch.Tensor:
    """How many time-bucket edges each far tile of a [block_q, block_k] tiling spans (hi - lo, as
    the kernels' `tile_buckets` finds them): a diagnostic of how often the fast path's tiles need
    their edge loop (> FAR_TILE_MAX_EDGES), for benchmarks and tests."""
    counts = []
    for b in range(seq_offsets.numel() - 1):
        start, n = int(seq_offsets[b]), int(seq_offsets[b + 1] - seq_offsets[b])
        m0 = torch.arange(0, n, block_q, device=edges.device)
        n0 = torch.arange(0, max(n - block_k + 1, 0), block_k, device=edges.device)
        if m0.numel() == 0 or n0.numel() == 0:
            continue
        m_grid, n_grid = torch.meshgrid(m0, n0, indexing="ij")
        far = n_grid + block_k <= m_grid
        m_grid, n_grid = m_grid[far], n_grid[far]
        last_row = torch.clamp(m_grid + block_q, max=n) - 1
        lo = (edges[:, start + m_grid] >= (n_grid + block_k - 1)[None, :]).sum(0)
        hi = (edges[:, start + last_row] >= n_grid[None, :]).sum(0)
        counts.append(hi - lo)
    return torch.cat(counts) if counts else torch.zeros(0, dtype=torch.int64, device=edges.device)


def diagonal_tile_edge_counts(edges: torch.Tensor, seq_offsets: torch.Tensor, block_q: int, block_k: int
                              ) -> torch.Tensor:
    """How many time-bucket edges each tile crossing the causal diagonal spans (its buckets run
    from 0 up to its widest pair's): what a loop over its edges would take, and what the band
    (`diagonal_bias`) spares; for benchmarks and tests, one value per such tile of the forward's
    [block_q, block_k] tiling."""
    counts = []
    for b in range(seq_offsets.numel() - 1):
        start, n = int(seq_offsets[b]), int(seq_offsets[b + 1] - seq_offsets[b])
        for m0 in range(0, n, block_q):
            last_row = min(m0 + block_q, n) - 1
            for n0 in range((m0 // block_k) * block_k, last_row + 1, block_k):
                counts.append(int((edges[:, start + last_row] >= n0).sum()))
    return torch.tensor(counts, dtype=torch.int64)


# Edges a far tile may span and still take the fast path (unrolled in the kernels); a tile whose
# buckets span more (a jump in time inside it) takes the exact per-logit path.
FAR_TILE_MAX_EDGES = 4


@dataclasses.dataclass(frozen=True)
class RabTables:
    """Kernel arguments of the fast rab path; `fast` False means every tile takes the exact path."""

    fast: bool
    edges: torch.Tensor  # int32 [K, T], or a 1-element placeholder
    pos_skew: torch.Tensor  # [SKEW_ROWS, width], or a 1-element placeholder
    skew_pad: int
    edge_pad: int  # power of two >= K, the width of the kernels' edge-count vectors
    pos_skew_keys: torch.Tensor | None = None  # [SKEW_ROWS, width] for [keys, queries] tiles
    skew_pad_keys: int = 0
    max_edges: int = FAR_TILE_MAX_EDGES
    time: _TimeTables | None = None  # `_edge_table`'s, with time weights on the fast path
    band: torch.Tensor | None = None  # `diagonal_bias`, with time weights on the fast path

    @property
    def edge_stride(self) -> int:
        return self.edges.stride(0) if self.edges.dim() == 2 else 0

    @property
    def band_table(self) -> torch.Tensor:
        """The band, or a placeholder the kernels never read (no time weights, or no token)."""
        return self.band if self.band is not None else self.edges.new_zeros(1, dtype=torch.float32)

    @property
    def skew_stride(self) -> int:
        return self.pos_skew.stride(0) if self.pos_skew.dim() == 2 else 0

    def first_queries(self) -> torch.Tensor:
        """`first_query_table` of the edges (the dk/dv kernel's), or the placeholder."""
        if not self.fast or self.time is None:
            return self.edges
        return self.time.first_queries

    def keys_first(self) -> tuple[torch.Tensor, int, int]:
        """(table, row stride, pad) of the positional table for [keys, queries] tiles."""
        table = self.pos_skew_keys if self.pos_skew_keys is not None else self.pos_skew
        return table, table.stride(0) if table.dim() == 2 else 0, self.skew_pad_keys


def rab_tables(
    ref: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    ts: torch.Tensor,
    request: torch.Tensor,
    pos_weights: torch.Tensor | None,
    ts_weights: torch.Tensor | None,
    *,
    fast: bool = True,
    batch: tuple[torch.Tensor | None, ...] | None = None,
) -> RabTables:
    """Tables for one call (`ts`, `request` and the weights as `triton_common.rab_args` returns them: the
    kernels' logit scale applied, as the band holds the bias itself).

    fast=False (or timestamps the edge table cannot take) selects the exact per-logit path.
    `batch`: the caller's own timestamps, request times and offsets, of which `ts`, `request` and
    `seq_offsets` are functions. Inside `batch_memo.TIME_TABLES.scope()` (a training step, a
    model's forward: `kernels.hstu_attention.batch_scope`), calls given the same tensor objects,
    unmodified, share the time tables: the edge search and its host sync run once per scope, not
    once per layer and direction.
    The band and the positional tables hold the layer's weights and are built per call (one
    launch and two gathers, no sync).
    """
    dummy_int = torch.zeros(1, dtype=torch.int32, device=ref.device)
    dummy = ref.new_zeros(1, dtype=torch.float32)
    num_buckets = ts_weights.numel() - 1 if ts_weights is not None else 0
    edge_pad = max(16, 1 << max(num_buckets - 1, 0).bit_length())
    time: _TimeTables | None = None
    if fast and ts_weights is not None:
        def search() -> _TimeTables | None:
            return _edge_table(ts, request, seq_offsets, num_buckets)

        if batch is None:
            time = search()
        else:
            time = TIME_TABLES.get(batch, (num_buckets, str(ts.device)), search)
        if time is None:
            return RabTables(False, dummy_int, dummy, 0, edge_pad)
    if not fast or (pos_weights is None and ts_weights is None):
        return RabTables(False, dummy_int, dummy, 0, edge_pad)
    time_args: dict = {}
    edges = dummy_int
    if time is not None:
        edges = time.edges
        time_args = dict(time=time)
        if time.sequences is not None and time.t_query is not None:
            time_args["band"] = diagonal_bias(ts, time.t_query, time.sequences, ts_weights, pos_weights, max_seq_len)
    if pos_weights is None:
        return RabTables(True, edges, dummy, 0, edge_pad, dummy, 0, **time_args)
    skew = skewed_positions(pos_weights, max_seq_len)
    keys_first = skewed_positions_keys_first(pos_weights, max_seq_len)
    return RabTables(True, edges, skew.table, skew.pad, edge_pad, keys_first.table, keys_first.pad, **time_args)


__all__ = ["FAR_TILE_MAX_EDGES", "RabTables", "TIME_TABLES", "SKEW_ALIGN", "SKEW_ROWS", "SkewedPositions", "band_size",
           "diagonal_bias", "diagonal_bias_reference", "diagonal_tile_edge_counts", "edge_table", "far_tile_edge_counts", "first_query_table",
           "rab_tables", "skewed_positions",
           "skewed_positions_keys_first"]
