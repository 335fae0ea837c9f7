"""Jagged HSTU attention as plain per-sequence matmuls with autograd (for independent FLOP counts).

The same function as `reference.hstu_attention_reference`, written another way: a Python loop
over sequences, for each one a batched matmul over heads for the logits over the full n x n
square (q_b [H, n, Dqk] @ k_b^T), the bias added and the causal mask multiplied in elementwise,
and a second one for the output (A [H, n, n] @ v_b [H, n, Dv]). `FlopCounterMode` then counts 2 n^2 H (Dqk + Dv) per sequence forward and twice that
backward (autograd's matmuls): the "dense-jagged" convention, counted, not asserted. Used only
under `kernels.per_sequence.per_sequence_attention()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.hstu_attention.reference import Norm, check_inputs, time_buckets


def hstu_attention_per_sequence(
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
    """q, k: [T, H, Dqk]; v: [T, H, Dv]; seq_offsets [B+1] -> [T, H, Dv] (semantics of the reference)."""
    check_inputs(q, k, v, norm, timestamps, pos_weights, ts_weights, max_seq_len, request_timestamps,
                 seq_offsets.numel() - 1)
    offsets = seq_offsets.tolist()
    outs = []
    for b, (start, end) in enumerate(zip(offsets[:-1], offsets[1:])):
        n = end - start
        if n == 0:
            continue
        # torch.bmm, not einsum: einsum turns a length-1 contraction into an uncounted multiply.
        logits_HNN = alpha * torch.bmm(q[start:end].transpose(0, 1), k[start:end].permute(1, 2, 0))
        i = torch.arange(n, device=q.device)
        if pos_weights is not None:
            logits_HNN = logits_HNN + pos_weights[i[None, :] - i[:, None] + max_seq_len - 1]
        if ts_weights is not None:
            assert timestamps is not None
            ts = timestamps[start:end].to(torch.int64)
            last = ts[-1:] if request_timestamps is None else request_timestamps[b : b + 1].to(torch.int64)
            query_ts = torch.cat([ts[1:], last.to(ts.device)])
            logits_HNN = logits_HNN + ts_weights[time_buckets(query_ts[:, None] - ts[None, :], ts_weights.numel() - 1)]
        divisor = max_seq_len if norm == "max_len" else n
        causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        attn_HNN = F.silu(logits_HNN) * causal / divisor
        outs.append(torch.bmm(attn_HNN.to(v.dtype), v[start:end].transpose(0, 1)).transpose(0, 1))
    if not outs:
        return v.new_zeros((q.shape[0], q.shape[1], v.shape[2]))
    return torch.cat(outs)


__all__ = ["hstu_attention_per_sequence"]
