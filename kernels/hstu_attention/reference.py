"""Plain PyTorch ground truth for jagged HSTU attention (forward and backward).

For sequence b of length n_b (tokens ``seq_offsets[b]:seq_offsets[b+1]`` of the jagged tensors)
and positions 0 <= j <= i < n_b (causal, diagonal included)::

    out[i] = sum_j silu(alpha * q_i . k_j + rab(i, j)) / n * v_j
    rab(i, j) = pos_weights[j - i + max_seq_len - 1] + ts_weights[bucket(ts[i + 1] - ts[j])]
    bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, len(ts_weights) - 1)

with ``n = max_seq_len`` (norm="max_len", upstream HSTU) or ``n = n_b`` (norm="seq_len"), and
``ts[n_b] := request_timestamps[b]``: query i is scored at the time of the next action, and the
last query at the request time, the timestamp of the item it predicts (upstream writes the
target's timestamp after the history for the same purpose). Without request_timestamps the last
query reuses its own timestamp. Either bias term is skipped when its weights are None.

The computation pads to [B, N, ...] with N the longest sequence of the batch and masks; this is
the readable form, not a fast one. It is never edited to match a kernel: kernels are tested
against it. The backward is written out by hand (not through autograd) because it runs inside a
`torch.library.custom_op`, below the autograd dispatch key; tests check it against autograd
through the forward.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F

Norm = Literal["max_len", "seq_len"]
NORMS: tuple[str, ...] = ("max_len", "seq_len")
# Upstream's time-bucket width in natural-log units (log base ~1.35 of the gap in seconds).
TIME_BUCKET_INCREMENT = 0.301


def time_buckets(delta: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, num_buckets), as int64.

    delta: integer time differences in seconds, any shape. Computed in float64 so that bucket
    edges do not move with the input dtype.
    """
    magnitude = delta.abs().to(torch.float64).clamp(min=1.0)
    return torch.floor(torch.log(magnitude) / TIME_BUCKET_INCREMENT).clamp(0, num_buckets).to(torch.int64)


@dataclasses.dataclass(frozen=True, slots=True)
class _Layout:
    """Index maps between jagged [T, ...] tensors and padded [B, N, ...] ones."""

    batch_idx: torch.Tensor  # [T] sequence of each token
    pos: torch.Tensor  # [T] index of each token within its sequence
    lengths: torch.Tensor  # [B]
    num_seqs: int
    padded_len: int  # N, the longest sequence of the batch
    mask_BNN: torch.Tensor  # bool, causal (j <= i) and both positions inside the sequence

    def pad(self, x_T: torch.Tensor) -> torch.Tensor:
        out = x_T.new_zeros((self.num_seqs, self.padded_len, *x_T.shape[1:]))
        out[self.batch_idx, self.pos] = x_T
        return out

    def unpad(self, x_BN: torch.Tensor) -> torch.Tensor:
        return x_BN[self.batch_idx, self.pos]


def check_offsets(seq_offsets: torch.Tensor, num_tokens: int, max_seq_len: int) -> None:
    """seq_offsets [B+1] must run from 0 to T without decreasing, no sequence longer than max_seq_len."""
    if seq_offsets.dim() != 1 or seq_offsets.numel() < 1:
        raise ValueError(f"seq_offsets must be 1-D [B+1], got shape {tuple(seq_offsets.shape)}")
    if seq_offsets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"seq_offsets must be int32 or int64, got {seq_offsets.dtype}")
    offsets = seq_offsets.to(torch.int64)
    lengths = offsets[1:] - offsets[:-1]
    if int(offsets[0]) != 0 or int(offsets[-1]) != num_tokens or bool((lengths < 0).any()):
        raise ValueError(
            f"seq_offsets must start at 0, be non-decreasing and end at T={num_tokens}; "
            f"got first={int(offsets[0])}, last={int(offsets[-1])}"
        )
    padded_len = int(lengths.max()) if lengths.numel() > 0 else 0
    if padded_len > max_seq_len:
        raise ValueError(
            f"a sequence has length {padded_len} > max_seq_len={max_seq_len}; truncate the inputs "
            "or raise max_seq_len (the positional bias has 2*max_seq_len-1 weights)"
        )


def _layout(seq_offsets: torch.Tensor, num_tokens: int, max_seq_len: int) -> _Layout:
    check_offsets(seq_offsets, num_tokens, max_seq_len)
    offsets = seq_offsets.to(torch.int64)
    lengths = offsets[1:] - offsets[:-1]
    num_seqs = lengths.numel()
    padded_len = int(lengths.max()) if num_seqs > 0 else 0
    device = offsets.device
    batch_idx = torch.repeat_interleave(torch.arange(num_seqs, device=device), lengths)
    pos = torch.arange(num_tokens, device=device) - offsets[:-1][batch_idx]
    ar = torch.arange(padded_len, device=device)
    valid_BN = ar[None, :] < lengths[:, None]
    mask = (ar[None, :, None] >= ar[None, None, :]) & valid_BN[:, :, None] & valid_BN[:, None, :]
    return _Layout(batch_idx, pos, lengths, num_seqs, padded_len, mask)


def _rab_indices(
    layout: _Layout,
    max_seq_len: int,
    timestamps: torch.Tensor | None,
    request_timestamps: torch.Tensor | None,
    num_ts_buckets: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Index of the positional weight [N, N] and of the time weight [B, N, N] for every (i, j)."""
    ar = torch.arange(layout.padded_len, device=layout.lengths.device)
    pos_idx = ar[None, :] - ar[:, None] + max_seq_len - 1  # [i, j] -> j - i + N - 1
    if num_ts_buckets is None:
        return pos_idx, None
    assert timestamps is not None
    ts_BN = layout.pad(timestamps.to(torch.int64))
    # next_ts[b, i] = ts[b, i + 1]; the last real position takes the request time (or its own).
    next_ts = torch.cat([ts_BN[:, 1:], ts_BN[:, -1:]], dim=1)
    rows = torch.nonzero(layout.lengths > 0).flatten()
    last = layout.lengths[rows] - 1
    if request_timestamps is None:
        next_ts[rows, last] = ts_BN[rows, last]
    else:
        next_ts[rows, last] = request_timestamps.to(torch.int64)[rows]
    ts_idx = time_buckets(next_ts[:, :, None] - ts_BN[:, None, :], num_ts_buckets)
    return pos_idx, ts_idx


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    norm: str,
    timestamps: torch.Tensor | None,
    pos_weights: torch.Tensor | None,
    ts_weights: torch.Tensor | None,
    max_seq_len: int,
    request_timestamps: torch.Tensor | None = None,
    num_seqs: int | None = None,
) -> None:
    """Shapes and options every implementation requires (the Triton wrapper adds dtype checks)."""
    if q.dim() != 3 or k.shape != q.shape or v.dim() != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            "expected q, k: [T, H, Dqk] and v: [T, H, Dv]; got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
    if pos_weights is not None and pos_weights.shape != (2 * max_seq_len - 1,):
        raise ValueError(
            f"pos_weights must have shape [2*max_seq_len-1] = [{2 * max_seq_len - 1}], got {tuple(pos_weights.shape)}"
        )
    if ts_weights is not None:
        if ts_weights.dim() != 1 or ts_weights.numel() < 1:
            raise ValueError(f"ts_weights must be 1-D [num_buckets+1], got shape {tuple(ts_weights.shape)}")
        if timestamps is None or timestamps.shape != (q.shape[0],):
            got = None if timestamps is None else tuple(timestamps.shape)
            raise ValueError(f"ts_weights needs timestamps of shape [T] = [{q.shape[0]}], got {got}")
    if request_timestamps is not None and (
        request_timestamps.dim() != 1 or (num_seqs is not None and request_timestamps.numel() != num_seqs)
    ):
        raise ValueError(
            f"request_timestamps must be 1-D [B] = [{num_seqs}] (one per sequence), "
            f"got shape {tuple(request_timestamps.shape)}"
        )


def _forward_parts(
    q: torch.Tensor,
    k: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    norm: str,
    timestamps: torch.Tensor | None,
    request_timestamps: torch.Tensor | None,
    pos_weights: torch.Tensor | None,
    ts_weights: torch.Tensor | None,
) -> tuple[_Layout, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Padded logits s [B, H, N, N], plus the rab indices and the mask / n scale [B, 1, N, N]."""
    layout = _layout(seq_offsets, q.shape[0], max_seq_len)
    q_BNHD, k_BNHD = layout.pad(q), layout.pad(k)
    s = alpha * torch.einsum("bihd,bjhd->bhij", q_BNHD, k_BNHD)
    num_ts_buckets = None if ts_weights is None else ts_weights.numel() - 1
    pos_idx, ts_idx = _rab_indices(layout, max_seq_len, timestamps, request_timestamps, num_ts_buckets)
    if pos_weights is not None:
        s = s + pos_weights.to(s.dtype)[pos_idx][None, None]
    if ts_weights is not None:
        s = s + ts_weights.to(s.dtype)[ts_idx][:, None]
    if norm == "max_len":
        n_B = torch.full((layout.num_seqs,), float(max_seq_len), dtype=s.dtype, device=s.device)
    else:
        n_B = layout.lengths.to(s.dtype).clamp(min=1.0)  # an empty sequence has no pairs to scale
    scale = layout.mask_BNN.to(s.dtype)[:, None] / n_B[:, None, None, None]
    return layout, s, pos_idx, ts_idx, scale


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # Half-precision inputs are computed in float32 so the reference stays a reference.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def hstu_attention_reference(
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
    """Jagged HSTU attention. q, k: [T, H, Dqk]; v: [T, H, Dv]; seq_offsets: [B+1]; returns [T, H, Dv].

    timestamps: [T] int seconds, needed only with ts_weights [num_buckets+1]; request_timestamps:
    [B] int seconds, the time each sequence's last query is scored at (default: its own);
    pos_weights: [2*max_seq_len-1]. Differentiable through ordinary autograd.
    """
    check_inputs(q, k, v, norm, timestamps, pos_weights, ts_weights, max_seq_len, request_timestamps,
                 seq_offsets.numel() - 1)
    dt = _compute_dtype(q)
    layout, s, _, _, scale = _forward_parts(
        q.to(dt), k.to(dt), seq_offsets, max_seq_len, alpha, norm, timestamps, request_timestamps, pos_weights,
        ts_weights,
    )
    attn_BHNN = F.silu(s) * scale
    out_BNHD = torch.einsum("bhij,bjhd->bihd", attn_BHNN, layout.pad(v.to(dt)))
    return layout.unpad(out_BNHD).to(v.dtype)


def hstu_attention_reference_backward(
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
    """Gradients (dq, dk, dv, d_pos_weights, d_ts_weights) of `hstu_attention_reference`.

    grad_out: [T, H, Dv]. The bias gradients are None when their weights are None.
    With a = silu(s) * mask / n and out = a v:  dv = a^T dout,  ds = (dout v^T) * silu'(s) * mask / n,
    dq = alpha ds k,  dk = alpha ds^T q,  drab = sum over heads of ds, scattered into the weights.
    """
    check_inputs(q, k, v, norm, timestamps, pos_weights, ts_weights, max_seq_len, request_timestamps,
                 seq_offsets.numel() - 1)
    dt = _compute_dtype(q)
    q_, k_ = q.to(dt), k.to(dt)
    layout, s, pos_idx, ts_idx, scale = _forward_parts(
        q_, k_, seq_offsets, max_seq_len, alpha, norm, timestamps, request_timestamps, pos_weights, ts_weights
    )
    sig = torch.sigmoid(s)
    attn = s * sig * scale
    dsilu = sig * (1.0 + s * (1.0 - sig))
    dout_BNHD = layout.pad(grad_out.to(dt))
    v_BNHD = layout.pad(v.to(dt))
    dv = torch.einsum("bhij,bihd->bjhd", attn, dout_BNHD)
    ds = torch.einsum("bihd,bjhd->bhij", dout_BNHD, v_BNHD) * dsilu * scale
    dq = alpha * torch.einsum("bhij,bjhd->bihd", ds, layout.pad(k_))
    dk = alpha * torch.einsum("bhij,bihd->bjhd", ds, layout.pad(q_))
    drab_BNN = ds.sum(dim=1)  # rab is shared over heads; zero outside the mask
    d_pos = d_ts = None
    if pos_weights is not None:
        d_pos = torch.zeros(pos_weights.shape, dtype=dt, device=q.device)
        d_pos.index_add_(0, pos_idx.expand_as(drab_BNN).reshape(-1), drab_BNN.reshape(-1))
        d_pos = d_pos.to(pos_weights.dtype)
    if ts_weights is not None:
        assert ts_idx is not None
        d_ts = torch.zeros(ts_weights.shape, dtype=dt, device=q.device)
        d_ts.index_add_(0, ts_idx.reshape(-1), drab_BNN.reshape(-1))
        d_ts = d_ts.to(ts_weights.dtype)
    return (
        layout.unpad(dq).to(q.dtype),
        layout.unpad(dk).to(k.dtype),
        layout.unpad(dv).to(v.dtype),
        d_pos,
        d_ts,
    )


def dense_attention_flops(seq_offsets: torch.Tensor, num_heads: int, dqk: int, dv: int) -> int:
    """Forward FLOPs of the two attention matmuls, "dense jagged" convention.

    sum_b n_b^2 * H * (Dqk + Dv) * 2: the full n_b x n_b square of QK^T and AV (no causal
    halving, no padding), 2 FLOPs per multiply-add. The backward is counted as 2x this.
    """
    lengths = (seq_offsets[1:] - seq_offsets[:-1]).to(torch.int64)
    return int((lengths * lengths).sum()) * num_heads * (dqk + dv) * 2


__all__ = [
    "NORMS",
    "TIME_BUCKET_INCREMENT",
    "check_offsets",
    "dense_attention_flops",
    "hstu_attention_reference",
    "hstu_attention_reference_backward",
    "time_buckets",
]
