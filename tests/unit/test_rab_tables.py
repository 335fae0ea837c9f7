"""The fast rab path's host tables: bucket for bucket the reference's, and the positional block layout."""

from __future__ import annotations

import logging

import pytest
import torch

from host_syncs import HostSyncs
from kernels.hstu_attention import batch_scope, rab_tables
from kernels.hstu_attention.rab_tables import (
    SKEW_ALIGN, SKEW_ROWS, edge_table, first_query_table, skewed_positions, skewed_positions_keys_first,
)
from kernels.hstu_attention.reference import time_buckets
from kernels.hstu_attention.triton_common import _threshold_values

NUM_BUCKETS = 128


def _offsets(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist()], dtype=torch.int64)


def _buckets_from_edges(edges: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    """Per sequence [n, n]: bucket(i, j) = #edges k with j <= J[k, i] (what the kernels select by)."""
    out = []
    for b in range(offsets.numel() - 1):
        start, end = int(offsets[b]), int(offsets[b + 1])
        n = end - start
        j = torch.arange(n)
        out.append((j[None, None, :] <= edges[:, start:end, None].long()).sum(0))
    return out


def _reference_buckets(ts: torch.Tensor, request: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for b in range(offsets.numel() - 1):
        seq = ts[int(offsets[b]): int(offsets[b + 1])]
        query = torch.cat([seq[1:], request[b: b + 1]])[: seq.numel()]
        out.append(time_buckets(query[:, None] - seq[None, :], NUM_BUCKETS))
    return out


def _assert_same_buckets(ts: torch.Tensor, request: torch.Tensor, lengths: list[int]) -> None:
    offsets = _offsets(lengths)
    edges = edge_table(ts, request, offsets, NUM_BUCKETS)
    assert edges is not None and edges.dtype == torch.int32 and edges.shape == (NUM_BUCKETS, ts.numel())
    for got, want in zip(_buckets_from_edges(edges, offsets), _reference_buckets(ts, request, offsets)):
        causal = torch.ones_like(want, dtype=torch.bool).tril()
        assert torch.equal(got[causal], want[causal])


def _edge_gap_sequences() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(ts, request, lengths): one sequence per gap at every bucket threshold, one second either
    side, and 0: a key at t0, the next key `gap` later, the request `gap` after that (gaps g, 2g)."""
    thresholds = [t for t in _threshold_values(NUM_BUCKETS)[1:] if t < 2**45]
    gaps = sorted({max(g, 0) for t in thresholds for g in (t - 1, t, t + 1)} | {0, 1, 2})
    t0 = 1_700_000_000_123
    ts = torch.tensor([t for gap in gaps for t in (t0, t0 + gap)])
    return ts, torch.tensor([t0 + 2 * gap for gap in gaps]), [2] * len(gaps)


def _jumpy_steps(lengths: list[int], seed: int, scale: float) -> torch.Tensor:
    """Steps between events, log-uniform up to e^scale seconds, 30% of them zero (ties)."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    steps = torch.exp(torch.rand(total, generator=gen) * scale).long() * (torch.rand(total, generator=gen) > 0.3)
    return steps


def _last_events(ts: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Each sequence's last timestamp (0 for an empty one)."""
    return torch.stack([ts[int(e) - 1] if e > s else torch.tensor(0) for s, e in zip(offsets[:-1], offsets[1:])])


def test_buckets_match_the_reference_at_every_edge_and_one_second_either_side():
    _assert_same_buckets(*_edge_gap_sequences())


def test_buckets_match_on_long_sorted_sequences_with_ties_and_jumps():
    lengths = [0, 1, 37, 150, 64]
    steps = _jumpy_steps(lengths, seed=0, scale=20)
    steps[::17] = 2**31 - 7  # gaps near 2^31
    ts = 10**9 + steps.cumsum(0)
    request = _last_events(ts, _offsets(lengths)) + torch.tensor([5, 0, 3600, 2**31, 1])
    _assert_same_buckets(ts, request, lengths)


def test_first_query_table_is_the_edge_table_seen_from_the_keys():
    # i >= I[k, j] exactly when j <= J[k, i]: the dk/dv kernel tests key rows by I, the others
    # query rows by J, and both must pick the same pairs (empty and one-token sequences included).
    gen = torch.Generator().manual_seed(1)
    lengths = [5, 0, 1, 90, 33]
    total = sum(lengths)
    steps = torch.exp(torch.rand(total, generator=gen) * 16).long() * (torch.rand(total, generator=gen) > 0.25)
    ts = 10**9 + steps.cumsum(0)
    offsets = _offsets(lengths)
    last = _last_events(ts, offsets)
    edges = edge_table(ts, last + 30, offsets, NUM_BUCKETS)
    first = first_query_table(edges, offsets)
    assert first.dtype == torch.int32 and first.shape == edges.shape
    # The tables as the kernels get them: the edges past the batch's largest span unsearched.
    reach = rab_tables._edge_table(ts, last + 30, offsets, NUM_BUCKETS).reach
    assert 0 < reach < NUM_BUCKETS and bool((edges[reach:] == -1).all())
    assert torch.equal(first_query_table(edges, offsets, reach), first)
    for b in range(len(lengths)):
        start, n = int(offsets[b]), lengths[b]
        i, j = torch.arange(n), torch.arange(n)
        by_rows = j[None, None, :] <= edges[:, start:start + n, None].long()  # [K, i, j]
        by_keys = i[None, :, None] >= first[:, None, start:start + n].long()
        assert torch.equal(by_rows, by_keys)
        assert bool(((first[:, start:start + n] >= 0) & (first[:, start:start + n] <= n)).all())


def test_spans_just_below_2_46_are_exact_and_beyond_fall_back(caplog):
    near = 2**46 - 2
    ts = torch.tensor([0, 1, near - 1])
    _assert_same_buckets(ts, torch.tensor([near]), [3])
    was_logged = rab_tables._logged_fallback
    rab_tables._logged_fallback = False
    try:
        with caplog.at_level(logging.INFO, logger="kernels.hstu_attention.rab_tables"):
            assert edge_table(ts, torch.tensor([2**46 + 1]), _offsets([3]), NUM_BUCKETS) is None
        assert "exact per-logit path" in caplog.text
    finally:
        rab_tables._logged_fallback = was_logged


@pytest.mark.parametrize("ts, request_times", [
    ([5, 3, 9, 1, 2], [10, 3]),  # unsorted inside the first sequence
    ([1, 2, 3, 4, 5], [2, 6]),  # a request time before its sequence's last event
])
def test_unusable_timestamps_select_the_exact_path(ts, request_times):
    assert edge_table(torch.tensor(ts), torch.tensor(request_times), _offsets([3, 2]), NUM_BUCKETS) is None


def test_sequences_need_no_order_between_them():
    # The second sequence starts earlier than the first ends: only order within one matters.
    ts = torch.tensor([100, 200, 300, 5, 50])
    _assert_same_buckets(ts, torch.tensor([400, 60]), [3, 2])


@pytest.mark.parametrize("max_seq_len", [1, 17, 64, 200])
def test_skewed_positions_hold_every_tile_as_an_aligned_block(max_seq_len):
    pos_w = torch.randn(2 * max_seq_len - 1, generator=torch.Generator().manual_seed(max_seq_len))
    skew = skewed_positions(pos_w, max_seq_len)
    assert skew.table.shape[0] == SKEW_ROWS and skew.table.stride(0) % SKEW_ALIGN == 0
    for m_start, n_start, rows, cols in [(64, 0, 32, 16), (128, 32, 128, 64), (32, 16, 16, 16)]:
        if n_start + cols > m_start or m_start >= max_seq_len:
            continue
        col0 = n_start - m_start + max_seq_len - 1 + skew.pad
        assert col0 % SKEW_ALIGN == 0
        block = skew.table[:rows, col0: col0 + cols]
        i = m_start + torch.arange(rows)[:, None]
        j = n_start + torch.arange(cols)[None, :]
        idx = j - i + max_seq_len - 1
        want = torch.where((idx >= 0), pos_w[idx.clamp(min=0)], torch.zeros(()))
        assert torch.equal(block, want)


@pytest.mark.parametrize("max_seq_len", [1, 17, 64, 200])
def test_keys_first_table_holds_every_transposed_tile_as_an_aligned_block(max_seq_len):
    pos_w = torch.randn(2 * max_seq_len - 1, generator=torch.Generator().manual_seed(max_seq_len))
    skew = skewed_positions_keys_first(pos_w, max_seq_len)
    assert skew.table.shape[0] == SKEW_ROWS and skew.table.stride(0) % SKEW_ALIGN == 0
    # [keys, queries] tiles of the dk/dv kernel: far ones (queries after keys) and diagonal ones.
    for n_start, m_start, keys, queries in [(0, 64, 32, 16), (32, 128, 128, 64), (64, 0, 64, 64), (0, 0, 128, 128)]:
        if n_start >= max_seq_len or m_start >= max_seq_len:
            continue
        col0 = m_start - n_start + skew.pad
        assert col0 % SKEW_ALIGN == 0 and col0 >= 0
        block = skew.table[:keys, col0: col0 + queries]
        j = n_start + torch.arange(keys)[:, None]
        i = m_start + torch.arange(queries)[None, :]
        idx = j - i + max_seq_len - 1
        inside = (idx >= 0) & (idx < 2 * max_seq_len - 1)
        want = torch.where(inside, pos_w[idx.clamp(0, 2 * max_seq_len - 2)], torch.zeros(()))
        assert torch.equal(block, want)


def test_the_tables_take_one_host_sync_and_the_weight_gradients_none():
    # On an H200 the forward + backward of the fast path took ~5 ms more than its kernels
    # (benchmarks/results/attention-nvidia-h200.json): every sync leaves the GPU idle while the
    # host catches up. One is needed (the sortedness check picks the path); the rest are not.
    from kernels.hstu_attention.triton_rab_grad import _positional_gradient

    gen = torch.Generator().manual_seed(3)
    lengths = [40, 0, 1, 77, 12]
    max_seq_len = 80
    total = sum(lengths)
    ts = 10**9 + torch.randint(0, 5000, (total,), generator=gen).cumsum(0)
    offsets = _offsets(lengths)
    request = ts[(offsets[1:] - 1).clamp(min=0)]
    pos_w = torch.randn(2 * max_seq_len - 1, generator=gen)
    ts_w = torch.randn(NUM_BUCKETS + 1, generator=gen)
    rab_tables.rab_tables(ts.float(), offsets, max_seq_len, ts, request, pos_w, ts_w)  # caches thresholds
    with HostSyncs() as seen:
        tables = rab_tables.rab_tables(ts.float(), offsets, max_seq_len, ts, request, pos_w, ts_w)
        tables.first_queries()
    assert tables.fast
    assert seen.syncs == ["aten._local_scalar_dense.default"]

    # Inside a forward's scope, given the batch's own tensors, the next layers reuse the time
    # tables: no sync, no search, the same first-query table; a new batch searches again, and so
    # does every call outside a scope.
    batch = (ts, request, offsets)
    with batch_scope():
        first = rab_tables.rab_tables(ts.float(), offsets, max_seq_len, ts, request, pos_w, ts_w, batch=batch)
        with HostSyncs() as seen:
            for _ in range(3):
                again = rab_tables.rab_tables(ts.float(), offsets, max_seq_len, ts, request, pos_w, ts_w,
                                              batch=batch)
                assert again.edges is first.edges and again.first_queries() is first.first_queries()
        assert seen.syncs == []
        assert torch.equal(first.edges, tables.edges) and torch.equal(first.first_queries(), tables.first_queries())
        with HostSyncs() as seen:
            other = ts.clone()
            rab_tables.rab_tables(ts.float(), offsets, max_seq_len, other, request, pos_w, ts_w,
                                  batch=(other, request, offsets))
        assert seen.syncs == ["aten._local_scalar_dense.default"]
    with HostSyncs() as seen:
        rab_tables.rab_tables(ts.float(), offsets, max_seq_len, ts, request, pos_w, ts_w, batch=batch)
    assert seen.syncs == ["aten._local_scalar_dense.default"]

    block, num_seqs = 32, len(lengths)
    parts = torch.randn(4096, generator=gen)
    with HostSyncs() as seen:
        _positional_gradient(parts, block, num_seqs, max_seq_len)
    assert seen.syncs == []


def _band(ts: torch.Tensor, request: torch.Tensor, lengths: list[int], num_buckets: int = NUM_BUCKETS,
          with_pos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(the kernel's diagonal band, the reference's) with random weights."""
    offsets = _offsets(lengths)
    max_seq_len = max(lengths)
    gen = torch.Generator().manual_seed(len(lengths))
    ts_w = torch.randn(num_buckets + 1, generator=gen)
    pos_w = torch.randn(2 * max_seq_len - 1, generator=gen) if with_pos else None
    time = rab_tables._edge_table(ts, request, offsets, num_buckets)
    assert time is not None and time.sequences is not None and time.t_query is not None
    band = rab_tables.diagonal_bias(ts, time.t_query, time.sequences, ts_w, pos_w, max_seq_len)
    assert band.dtype == torch.float32 and band.numel() == rab_tables.band_size(ts.numel())
    return band, rab_tables.diagonal_bias_reference(ts, request, offsets, ts_w, pos_w, max_seq_len)


@pytest.mark.parametrize("with_pos", [True, False])
def test_the_diagonal_band_holds_the_reference_bias_at_every_edge(with_pos):
    band, want = _band(*_edge_gap_sequences(), with_pos=with_pos)
    assert torch.equal(band, want)


def test_the_diagonal_band_reaches_256_keys_back_on_long_sequences():
    lengths = [300, 0, 1, 37, 260]
    steps = _jumpy_steps(lengths, seed=4, scale=20)
    steps[::23] = 2**31 - 5  # gaps near 2^31
    ts = 10**9 + steps.cumsum(0)
    offsets = _offsets(lengths)
    request = _last_events(ts, offsets) + torch.tensor([7, 0, 2**40, 1, 3600])
    band, want = _band(ts, request, lengths, with_pos=False)
    assert torch.equal(band, want)
    # The kernels' read of a diagonal tile (`triton_common.band_bias`): query rows 256..299 of
    # the first sequence, keys from 45 (255 back from the last row) to the rows themselves; the
    # band holds the time weights here (no positional ones).
    gen = torch.Generator().manual_seed(len(lengths))
    ts_w = torch.randn(NUM_BUCKETS + 1, generator=gen)
    buckets = _reference_buckets(ts, request, offsets)[0]
    i, j = torch.meshgrid(torch.arange(256, 300), torch.arange(45, 300), indexing="ij")
    block = band[i * 256 + j + 256]
    causal = j <= i
    assert torch.equal(block[causal], ts_w[buckets[i[causal], j[causal]]])


def test_the_diagonal_band_takes_buckets_past_255():
    ts = torch.tensor([0, 1, 10, 10**6, 10**12, 10**13])
    band, want = _band(ts, torch.tensor([10**13 + 5]), [6], num_buckets=300)
    assert torch.equal(band, want)


def test_diagonal_tile_edge_counts_are_the_widest_bucket_of_each_diagonal_tile():
    lengths = [70, 1, 0, 33]
    ts = 10**9 + _jumpy_steps(lengths, seed=6, scale=12).cumsum(0)
    offsets = _offsets(lengths)
    request = ts[(offsets[1:] - 1).clamp(min=0)]
    edges = edge_table(ts, request, offsets, NUM_BUCKETS)
    want = []
    for buckets, n in zip(_reference_buckets(ts, request, offsets), lengths):
        for m0 in range(0, n, 32):
            for n0 in range((m0 // 16) * 16, min(m0 + 32, n), 16):
                tile = buckets[m0:m0 + 32, n0:n0 + 16]
                causal = (n0 + torch.arange(tile.shape[1]))[None, :] <= (m0 + torch.arange(tile.shape[0]))[:, None]
                want.append(int(tile[causal].max()))
    got = rab_tables.diagonal_tile_edge_counts(edges, offsets, 32, 16)
    assert got.tolist() == want and max(want) > 3
