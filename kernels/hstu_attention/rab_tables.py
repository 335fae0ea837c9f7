"""Host-side tables that turn the relative attention bias of far tiles into loads and compares.

Built once per kernel call in PyTorch (a few element-wise ops and one `searchsorted`), shared by
every head; see `../shared/kernel-rab-design.md` for the measurements behind the design.

- **Edge table** (time term). Within a sequence, timestamps are non-decreasing, so for query row
  i (scored at t_i = ts[i+1], the request time for the last row) the time bucket of key j is at
  least k exactly when j <= J[k, i], J[k, i] being the last key with ts[j] <= t_i - thr[k]
  (`triton_common._threshold_values`: the reference's own float64 edges). A bucket is then the
  count of edges a key passes, and the bias of a tile is chosen among the tile's few buckets by
  integer compares: no logarithm, no gather of a weight per logit, bucket for bucket the
  reference's. Stored [K, T] int32 (edge k = 1..K in row k - 1, -1 where no key qualifies), so
  the rows of one edge are one contiguous load.
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
import logging

import torch

from kernels.hstu_attention.triton_common import _threshold_values

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


def edge_table(
    ts: torch.Tensor, request: torch.Tensor, seq_offsets: torch.Tensor, num_buckets: int
) -> torch.Tensor | None:
    """int32 [num_buckets, T]: J[k - 1, t] = the last key (index within the sequence) whose gap to
    query t is at least thr[k], or -1. None when the fast path cannot be used (see module doc).

    ts: int64 [T]; request: int64 [B] (the time the last row is scored at); one host sync (the
    sortedness check, which picks the path), none elsewhere.
    """
    found = _edge_table(ts, request, seq_offsets, num_buckets)
    return found[0] if found is not None else None



def _edge_table(
    ts: torch.Tensor, request: torch.Tensor, seq_offsets: torch.Tensor, num_buckets: int
) -> tuple[torch.Tensor, int, TokenSequences | None] | None:
    """(`edge_table`, reach, the batch's `_token_sequences`): edges past the first `reach` have
    thresholds above every query's span in the batch, so no key passes them and their rows are -1
    without a search (the same host sync reads the span)."""
    global _logged_fallback
    num_tokens = ts.numel()
    num_seqs = seq_offsets.numel() - 1
    device = ts.device
    if num_buckets < 1 or num_tokens == 0:
        return torch.full((max(num_buckets, 1), num_tokens), -1, dtype=torch.int32, device=device), 0, None
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
    return table, reach, sequences


def first_query_table(edges: torch.Tensor, seq_offsets: torch.Tensor, max_seq_len: int,
                      reach: int | None = None, sequences: TokenSequences | None = None) -> torch.Tensor:
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
        # [0, n] and n <= max_seq_len (the kernels' contract; the host's bound, not a sync).
        stride = max_seq_len + 2
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
    seq_offsets: torch.Tensor | None = None  # for `first_queries`
    max_seq_len: int = 0
    reach: int | None = None  # edges any key passes (`_edge_table`); None: all may
    sequences: TokenSequences | None = None  # `_edge_table`'s, for `first_queries`

    @property
    def edge_stride(self) -> int:
        return self.edges.stride(0) if self.edges.dim() == 2 else 0

    @property
    def skew_stride(self) -> int:
        return self.pos_skew.stride(0) if self.pos_skew.dim() == 2 else 0

    def first_queries(self) -> torch.Tensor:
        """`first_query_table` of the edges (the dk/dv kernel's), or the placeholder."""
        if not self.fast or self.edges.dim() != 2 or self.seq_offsets is None:
            return self.edges
        return first_query_table(self.edges, self.seq_offsets, self.max_seq_len, self.reach, self.sequences)

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
) -> RabTables:
    """Tables for one call (`ts`, `request` as `triton_common.rab_args` returns them).

    fast=False (or timestamps the edge table cannot take) selects the exact per-logit path.
    """
    dummy_int = torch.zeros(1, dtype=torch.int32, device=ref.device)
    dummy = ref.new_zeros(1, dtype=torch.float32)
    num_buckets = ts_weights.numel() - 1 if ts_weights is not None else 0
    edge_pad = max(16, 1 << max(num_buckets - 1, 0).bit_length())
    found: tuple[torch.Tensor, int | None, TokenSequences | None] | None = (dummy_int, None, None)
    if fast and ts_weights is not None:
        found = _edge_table(ts, request, seq_offsets, num_buckets)
    if not fast or found is None or (pos_weights is None and ts_weights is None):
        return RabTables(False, dummy_int, dummy, 0, edge_pad)
    edges, reach, sequences = found
    if pos_weights is None:
        return RabTables(True, edges, dummy, 0, edge_pad, dummy, 0, seq_offsets=seq_offsets, max_seq_len=max_seq_len,
                         reach=reach, sequences=sequences)
    skew = skewed_positions(pos_weights, max_seq_len)
    keys_first = skewed_positions_keys_first(pos_weights, max_seq_len)
    return RabTables(True, edges, skew.table, skew.pad, edge_pad, keys_first.table, keys_first.pad,
                     seq_offsets=seq_offsets, max_seq_len=max_seq_len, reach=reach, sequences=sequences)


__all__ = ["FAR_TILE_MAX_EDGES", "RabTables", "SKEW_ALIGN", "SKEW_ROWS", "SkewedPositions", "edge_table",
           "far_tile_edge_counts", "first_query_table", "rab_tables", "skewed_positions",
           "skewed_positions_keys_first"]
