"""Jagged HSTU attention on the CPU: the reference's padded computation, without its waste.

The math is `reference.hstu_attention_reference`'s (and its backward's), tested against it to
float rounding in both directions (tests/unit/test_hstu_attention_padded.py). What the readable
form spends and this one does not:

- **Index maps once per batch, not once per layer and direction.** The layout (which padded
  slot each token takes, the causal mask), the positional index and the time buckets
  ([B, N, N], a float64 log per pair) depend only on (seq_offsets, timestamps,
  request_timestamps, max_seq_len, number of buckets). Every layer of a model's forward, and the
  backward of each, passes the same ones: a one-entry memo keeps the last batch's maps and
  reuses them when those inputs are equal by value (an O(T) comparison against O(B N^2) work; by
  value, so a tensor changed in place is never mistaken for the one the maps were built from).
- **Flat indexing**: tokens to padded slots and back by one `index_select` on a flat index (the
  padding reads an appended zero row), bias weights by `index_select`, instead of two-index
  advanced indexing into zero-filled tensors.
- **Bias gradients**: the positional one summed over sequences before it is scattered into its
  2N - 1 weights (the time one is scattered per pair, its index differs per sequence).

Selected by `hstu_attention(..., impl="auto")` on the CPU; "reference" still runs the readable
form.
"""

from __future__ import annotations

import dataclasses
import threading

import torch
import torch.nn.functional as F

from kernels.hstu_attention.reference import Norm, check_inputs, check_offsets, time_buckets


@dataclasses.dataclass(frozen=True, eq=False)
class BatchMaps:
    """Index maps between a batch's jagged [T, ...] tensors and padded [B, N, ...] ones, with its
    rab indices. Built by `batch_maps` from the inputs it keeps (copies) to be matched against."""

    # what the maps were built from (copies; compared by value)
    seq_offsets: torch.Tensor
    timestamps: torch.Tensor | None
    request_timestamps: torch.Tensor | None
    max_seq_len: int
    num_ts_buckets: int | None
    # the maps
    num_seqs: int
    padded_len: int  # N, the longest sequence of the batch
    lengths: torch.Tensor  # [B]
    slot: torch.Tensor  # [T] padded slot b * N + i of each token
    source: torch.Tensor  # [B * N] token in each padded slot, T (a zero row) in the padding
    mask_BNN: torch.Tensor  # bool: causal (j <= i), both positions inside the sequence
    pos_idx: torch.Tensor  # [N * N] int32 index of pos_weights for (i, j)
    ts_idx: torch.Tensor | None  # [B * N * N] int32 index of ts_weights for (b, i, j)

    def pad(self, x_T: torch.Tensor) -> torch.Tensor:
        """[T, ...] -> [B, N, ...], zero in the padding."""
        with_zero_row = torch.cat([x_T, x_T.new_zeros((1, *x_T.shape[1:]))])
        return with_zero_row.index_select(0, self.source).view(self.num_seqs, self.padded_len, *x_T.shape[1:])

    def unpad(self, x_BN: torch.Tensor) -> torch.Tensor:
        """[B, N, ...] -> [T, ...]."""
        return x_BN.reshape(self.num_seqs * self.padded_len, *x_BN.shape[2:]).index_select(0, self.slot)

    def scale(self, dtype: torch.dtype, norm: str) -> torch.Tensor:
        """mask / n as [B, 1, N, N] in dtype (n = max_seq_len or the sequence's length)."""
        if norm == "max_len":
            n_B = torch.full((self.num_seqs,), float(self.max_seq_len), dtype=dtype, device=self.lengths.device)
        else:
            n_B = self.lengths.to(dtype).clamp(min=1.0)  # an empty sequence has no pairs to scale
        return self.mask_BNN.to(dtype)[:, None] / n_B[:, None, None, None]

    def matches(self, seq_offsets: torch.Tensor, timestamps: torch.Tensor | None,
                request_timestamps: torch.Tensor | None, max_seq_len: int, num_ts_buckets: int | None) -> bool:
        return (max_seq_len == self.max_seq_len and num_ts_buckets == self.num_ts_buckets
                and _same(seq_offsets, self.seq_offsets) and _same(timestamps, self.timestamps)
                and _same(request_timestamps, self.request_timestamps))


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.device == b.device and a.dtype == b.dtype and torch.equal(a, b)


def _copy(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.detach().clone()


def _build(seq_offsets: torch.Tensor, max_seq_len: int, timestamps: torch.Tensor | None,
           request_timestamps: torch.Tensor | None, num_ts_buckets: int | None) -> BatchMaps:
    offsets = seq_offsets.to(torch.int64)
    lengths = offsets[1:] - offsets[:-1]
    num_seqs, num_tokens = lengths.numel(), int(offsets[-1])
    padded_len = int(lengths.max()) if num_seqs > 0 else 0
    device = offsets.device
    batch_idx = torch.repeat_interleave(torch.arange(num_seqs, device=device), lengths)
    pos = torch.arange(num_tokens, device=device) - offsets[:-1][batch_idx]
    slot = batch_idx * padded_len + pos
    source = torch.full((num_seqs * padded_len,), num_tokens, dtype=torch.int64, device=device)
    source[slot] = torch.arange(num_tokens, device=device)
    ar = torch.arange(padded_len, device=device)
    valid_BN = ar[None, :] < lengths[:, None]
    mask = (ar[None, :, None] >= ar[None, None, :]) & valid_BN[:, :, None] & valid_BN[:, None, :]
    pos_idx = (ar[None, :] - ar[:, None] + max_seq_len - 1).reshape(-1).to(torch.int32)  # [i, j] -> j - i + N - 1
    ts_idx = None
    if num_ts_buckets is not None:
        assert timestamps is not None
        ts_BN = timestamps.to(torch.int64).new_zeros(num_seqs * padded_len)
        ts_BN[slot] = timestamps.to(torch.int64)
        ts_BN = ts_BN.view(num_seqs, padded_len)
        # next_ts[b, i] = ts[b, i + 1]; the last real position takes the request time (or its own).
        next_ts = torch.cat([ts_BN[:, 1:], ts_BN[:, -1:]], dim=1)
        rows = torch.nonzero(lengths > 0).flatten()
        last = lengths[rows] - 1
        if request_timestamps is None:
            next_ts[rows, last] = ts_BN[rows, last]
        else:
            next_ts[rows, last] = request_timestamps.to(torch.int64)[rows]
        # int32: what the memo keeps between calls is 5 bytes a pair with the mask
        ts_idx = time_buckets(next_ts[:, :, None] - ts_BN[:, None, :], num_ts_buckets).reshape(-1).to(torch.int32)
    return BatchMaps(
        seq_offsets=_copy(seq_offsets), timestamps=_copy(timestamps) if num_ts_buckets is not None else None,
        request_timestamps=_copy(request_timestamps) if num_ts_buckets is not None else None,
        max_seq_len=max_seq_len, num_ts_buckets=num_ts_buckets, num_seqs=num_seqs, padded_len=padded_len,
        lengths=lengths, slot=slot, source=source, mask_BNN=mask, pos_idx=pos_idx, ts_idx=ts_idx,
    )


_last_maps: BatchMaps | None = None
_memo_lock = threading.Lock()


def batch_maps(seq_offsets: torch.Tensor, max_seq_len: int, timestamps: torch.Tensor | None,
               request_timestamps: torch.Tensor | None, num_ts_buckets: int | None) -> BatchMaps:
    """The batch's maps: the last ones built when the inputs are equal by value, else new ones.

    timestamps and request_timestamps only count with the time bias (num_ts_buckets not None).
    """
    global _last_maps
    if num_ts_buckets is None:
        timestamps = request_timestamps = None
    with _memo_lock:
        last = _last_maps
    if last is not None and last.matches(seq_offsets, timestamps, request_timestamps, max_seq_len, num_ts_buckets):
        return last
    maps = _build(seq_offsets, max_seq_len, timestamps, request_timestamps, num_ts_buckets)
    with _memo_lock:
        _last_maps = maps
    return maps


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _logits(maps: BatchMaps, q: torch.Tensor, k: torch.Tensor, alpha: float, pos_weights: torch.Tensor | None,
            ts_weights: torch.Tensor | None) -> torch.Tensor:
    """Padded logits s [B, H, N, N] (bias included) of q, k [T, H, D] in their dtype."""
    s = torch.einsum("bihd,bjhd->bhij", maps.pad(q), maps.pad(k))
    if alpha != 1.0:
        s.mul_(alpha)
    b, n = maps.num_seqs, maps.padded_len
    if pos_weights is not None:
        s.add_(pos_weights.to(s.dtype).index_select(0, maps.pos_idx).view(1, 1, n, n))
    if ts_weights is not None:
        assert maps.ts_idx is not None
        s.add_(ts_weights.to(s.dtype).index_select(0, maps.ts_idx).view(b, 1, n, n))
    return s


def hstu_attention_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    *,
    alpha: float = 1.0,
    norm: Norm = "max_len",
    timestamps: torch.Tensor | None = None,
    pos_weights: torch.Tensor | None = None,
    ts_weights: torch.Tensor | None = None,
    request_timestamps: torch.Tensor | None = None,
) -> torch.Tensor:
    """`reference.hstu_attention_reference`, computed as this module says; [T, H, Dv]."""
    maps = _checked_maps(q, k, v, seq_offsets, max_seq_len, norm, timestamps, pos_weights, ts_weights,
                         request_timestamps)
    dt = _compute_dtype(q)
    s = _logits(maps, q.to(dt), k.to(dt), alpha, pos_weights, ts_weights)
    attn = F.silu(s).mul_(maps.scale(dt, norm))
    out_BNHD = torch.einsum("bhij,bjhd->bihd", attn, maps.pad(v.to(dt)))
    return maps.unpad(out_BNHD).to(v.dtype)


def hstu_attention_padded_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    *,
    alpha: float = 1.0,
    norm: Norm = "max_len",
    timestamps: torch.Tensor | None = None,
    pos_weights: torch.Tensor | None = None,
    ts_weights: torch.Tensor | None = None,
    request_timestamps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """`reference.hstu_attention_reference_backward`: (dq, dk, dv, d_pos_weights, d_ts_weights)."""
    maps = _checked_maps(q, k, v, seq_offsets, max_seq_len, norm, timestamps, pos_weights, ts_weights,
                         request_timestamps)
    dt = _compute_dtype(q)
    q_BNHD, k_BNHD = maps.pad(q.to(dt)), maps.pad(k.to(dt))
    s = torch.einsum("bihd,bjhd->bhij", q_BNHD, k_BNHD)
    if alpha != 1.0:
        s.mul_(alpha)
    b, n = maps.num_seqs, maps.padded_len
    if pos_weights is not None:
        s.add_(pos_weights.to(dt).index_select(0, maps.pos_idx).view(1, 1, n, n))
    if ts_weights is not None:
        assert maps.ts_idx is not None
        s.add_(ts_weights.to(dt).index_select(0, maps.ts_idx).view(b, 1, n, n))
    scale = maps.scale(dt, norm)
    sig = torch.sigmoid(s)
    attn = (s * sig).mul_(scale)
    # silu'(s) = sig (1 + s (1 - sig)), computed in place over s
    dsilu = s.mul_(1.0 - sig).add_(1.0).mul_(sig)
    del sig
    dout_BNHD = maps.pad(grad_out.to(dt))
    dv = torch.einsum("bhij,bihd->bjhd", attn, dout_BNHD)
    del attn
    ds = torch.einsum("bihd,bjhd->bhij", dout_BNHD, maps.pad(v.to(dt))).mul_(dsilu).mul_(scale)
    del dsilu
    dq = torch.einsum("bhij,bjhd->bihd", ds, k_BNHD)
    dk = torch.einsum("bhij,bihd->bjhd", ds, q_BNHD)
    if alpha != 1.0:
        dq.mul_(alpha)
        dk.mul_(alpha)
    drab_BNN = ds.sum(dim=1)  # rab is shared over heads; zero outside the mask
    d_pos = d_ts = None
    if pos_weights is not None:
        d_pos = torch.zeros(pos_weights.shape, dtype=dt, device=q.device)
        d_pos.index_add_(0, maps.pos_idx, drab_BNN.sum(dim=0).reshape(-1))
        d_pos = d_pos.to(pos_weights.dtype)
    if ts_weights is not None:
        assert maps.ts_idx is not None
        d_ts = torch.zeros(ts_weights.shape, dtype=dt, device=q.device)
        d_ts.index_add_(0, maps.ts_idx, drab_BNN.reshape(-1))
        d_ts = d_ts.to(ts_weights.dtype)
    return maps.unpad(dq).to(q.dtype), maps.unpad(dk).to(k.dtype), maps.unpad(dv).to(v.dtype), d_pos, d_ts


def _checked_maps(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_offsets: torch.Tensor, max_seq_len: int,
                  norm: str, timestamps: torch.Tensor | None, pos_weights: torch.Tensor | None,
                  ts_weights: torch.Tensor | None, request_timestamps: torch.Tensor | None) -> BatchMaps:
    check_inputs(q, k, v, norm, timestamps, pos_weights, ts_weights, max_seq_len, request_timestamps,
                 seq_offsets.numel() - 1)
    check_offsets(seq_offsets, q.shape[0], max_seq_len)
    num_ts_buckets = None if ts_weights is None else ts_weights.numel() - 1
    return batch_maps(seq_offsets, max_seq_len, timestamps, request_timestamps, num_ts_buckets)


__all__ = ["BatchMaps", "batch_maps", "hstu_attention_padded", "hstu_attention_padded_backward"]
