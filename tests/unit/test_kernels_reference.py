"""Jagged HSTU attention: reference vs plain loops, custom-op gradients and FLOP counting."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import kernels
from kernels.hstu_attention import dense_attention_flops, hstu_attention_reference, time_buckets
from kernels.hstu_attention.op import hstu_attention_op


def _bucket_loop(d: int, num_buckets: int) -> int:
    """The published formula, one value at a time."""
    return int(min(max(math.floor(math.log(max(abs(d), 1)) / 0.301), 0), num_buckets))


def _loop_attention(q, k, v, offsets, max_seq_len, alpha, norm, ts, pos_w, ts_w, request=None):
    """Independent ground truth: per sequence, per query i, per key j <= i, in float64."""
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[2], dtype=torch.float64)
    offsets = offsets.tolist()
    for b in range(len(offsets) - 1):
        start, n_b = offsets[b], offsets[b + 1] - offsets[b]
        n = max_seq_len if norm == "max_len" else n_b
        for h in range(q.shape[1]):
            for i in range(n_b):
                # The query's time is the next event's; the last query's is the request time
                # (its own time when none is given).
                if ts is None:
                    next_ts = None
                elif i + 1 < n_b:
                    next_ts = ts[start + i + 1]
                else:
                    next_ts = ts[start + i] if request is None else request[b]
                for j in range(i + 1):
                    logit = alpha * float(q[start + i, h].double() @ k[start + j, h].double())
                    if pos_w is not None:
                        logit += float(pos_w[j - i + max_seq_len - 1])
                    if ts_w is not None:
                        logit += float(ts_w[_bucket_loop(int(next_ts - ts[start + j]), ts_w.numel() - 1)])
                    weight = logit / (1.0 + math.exp(-logit)) / n
                    out[start + i, h] += weight * v[start + j, h].double()
    return out


def _case(lengths, heads=2, dqk=3, dv=4, max_seq_len=6, num_buckets=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64)
    q = torch.randn(total, heads, dqk, generator=g, dtype=dtype)
    k = torch.randn(total, heads, dqk, generator=g, dtype=dtype)
    v = torch.randn(total, heads, dv, generator=g, dtype=dtype)
    # Gaps spanning several buckets, including zero gaps (same second).
    gaps = torch.randint(0, 3000, (total,), generator=g) * (torch.rand(total, generator=g) > 0.2)
    ts = 1_600_000_000 + gaps.cumsum(0)
    pos_w = torch.randn(2 * max_seq_len - 1, generator=g, dtype=dtype)
    ts_w = torch.randn(num_buckets + 1, generator=g, dtype=dtype)
    return q, k, v, offsets, max_seq_len, ts, pos_w, ts_w


LENGTHS = [[0], [1], [3, 0, 1, 6], [0, 2, 0], [5, 5]]


def _request_times(ts, offsets, seed=1):
    """A request time per sequence, after its last event by a gap that crosses bucket edges."""
    g = torch.Generator().manual_seed(seed)
    last = torch.tensor([int(ts[e - 1]) if e > s else 1_600_000_000 for s, e in zip(offsets[:-1], offsets[1:])])
    return last + torch.randint(0, 10**6, (last.numel(),), generator=g)


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("norm", ["max_len", "seq_len"])
@pytest.mark.parametrize("rab", ["none", "pos", "ts", "both"])
@pytest.mark.parametrize("with_request", [False, True])
def test_reference_matches_loops(lengths, norm, rab, with_request):
    q, k, v, offsets, n, ts, pos_w, ts_w = _case(lengths)
    pos_w = pos_w if rab in ("pos", "both") else None
    ts_w = ts_w if rab in ("ts", "both") else None
    request = _request_times(ts, offsets) if with_request else None
    alpha = 0.7
    got = hstu_attention_reference(
        q, k, v, offsets, n, alpha=alpha, norm=norm, timestamps=ts, pos_weights=pos_w, ts_weights=ts_w,
        request_timestamps=request,
    )
    want = _loop_attention(q, k, v, offsets, n, alpha, norm, ts, pos_w, ts_w, request)
    assert got.shape == (sum(lengths), 2, 4)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_reference_float32_input_keeps_dtype():
    q, k, v, offsets, n, ts, pos_w, ts_w = _case([4, 2], dtype=torch.float32)
    got = hstu_attention_reference(q, k, v, offsets, n, timestamps=ts, pos_weights=pos_w, ts_weights=ts_w)
    want = _loop_attention(q, k, v, offsets, n, 1.0, "max_len", ts, pos_w, ts_w)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_time_buckets_match_published_formula():
    deltas = [0, 1, -1, 2, 3, -5, 10, 59, 60, 3599, 3600, 86_400, -86_400, 10**7, 10**9, 10**12, 10**18]
    deltas += list(range(-40, 41))
    for num_buckets in (3, 128):
        got = time_buckets(torch.tensor(deltas), num_buckets).tolist()
        assert got == [_bucket_loop(d, num_buckets) for d in deltas]
    assert time_buckets(torch.tensor([10**12]), 128).item() == math.floor(math.log(1e12) / 0.301)


def test_time_bias_uses_next_timestamp_and_last_reuses_own():
    # One head, zero q/k/v except v: the output exposes the attention weights directly.
    n = 3
    q = torch.zeros(n, 1, 1, dtype=torch.float64)
    v = torch.eye(n, dtype=torch.float64).reshape(n, 1, n)
    ts = torch.tensor([0, 10, 1000])
    ts_w = torch.arange(26, dtype=torch.float64)  # weight = bucket index, buckets up to 25
    out = hstu_attention_reference(q, q, v, torch.tensor([0, n]), n, timestamps=ts, ts_weights=ts_w)
    silu = lambda x: x / (1 + math.exp(-x))  # noqa: E731
    b = lambda d: _bucket_loop(d, 25)  # noqa: E731
    # query 0 uses ts[1]=10; query 2 (last) reuses ts[2]=1000.
    assert out[0, 0, 0].item() == pytest.approx(silu(b(10 - 0)) / n)
    assert out[2, 0, 0].item() == pytest.approx(silu(b(1000 - 0)) / n)
    assert out[2, 0, 2].item() == pytest.approx(silu(b(0)) / n)
    assert out[1, 0, 2].item() == 0.0  # causal
    # With a request time, the last query is scored at it: gaps 5000 - ts[j].
    out = hstu_attention_reference(q, q, v, torch.tensor([0, n]), n, timestamps=ts, ts_weights=ts_w,
                                   request_timestamps=torch.tensor([5000]))
    assert out[2, 0, 0].item() == pytest.approx(silu(b(5000 - 0)) / n)
    assert out[2, 0, 2].item() == pytest.approx(silu(b(5000 - 1000)) / n)
    assert out[0, 0, 0].item() == pytest.approx(silu(b(10 - 0)) / n)  # other queries unchanged


def _op_args(case, rab=True):
    q, k, v, offsets, n, ts, pos_w, ts_w = case
    return (q, k, v, offsets, n, 0.9, "max_len", ts, pos_w if rab else None, ts_w if rab else None)


def test_custom_op_gradcheck_float64():
    q, k, v, offsets, n, ts, pos_w, ts_w = _case([3, 0, 1, 2], heads=2, dqk=2, dv=2, max_seq_len=4, num_buckets=8)
    inputs = [x.clone().requires_grad_(True) for x in (q, k, v, pos_w, ts_w)]
    request = _request_times(ts, offsets)

    def f(q_, k_, v_, pw, tw):
        return hstu_attention_op(q_, k_, v_, offsets, n, 0.9, "seq_len", ts, pw, tw, request)

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("rab", [True, False])
def test_custom_op_grads_equal_autograd_through_reference(rab):
    case = _case([4, 0, 1, 6, 2])
    q, k, v, offsets, n, ts, pos_w, ts_w = case
    leaves = [q, k, v] + ([pos_w, ts_w] if rab else [])
    leaves = [x.clone().requires_grad_(True) for x in leaves]
    pw, tw = (leaves[3], leaves[4]) if rab else (None, None)
    grad_out = torch.randn(q.shape[0], q.shape[1], v.shape[2], dtype=torch.float64)

    out_op = kernels.hstu_attention(*leaves[:3], offsets, n, alpha=0.9, timestamps=ts, pos_weights=pw, ts_weights=tw)
    grads_op = torch.autograd.grad(out_op, leaves, grad_out)
    out_ref = hstu_attention_reference(
        *leaves[:3], offsets, n, alpha=0.9, timestamps=ts, pos_weights=pw, ts_weights=tw
    )
    grads_ref = torch.autograd.grad(out_ref, leaves, grad_out)
    torch.testing.assert_close(out_op, out_ref)
    for got, want in zip(grads_op, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_opcheck_fake_and_autograd_registration():
    case = _case([3, 1], heads=1, dqk=2, dv=3, max_seq_len=4)
    args = list(_op_args(case))
    for i in (0, 1, 2, 8, 9):
        args[i] = args[i].clone().requires_grad_(True)
    torch.library.opcheck(torch.ops.gr_scaling.hstu_attention.default, tuple(args))
    grad_out = torch.randn(4, 1, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.gr_scaling.hstu_attention_backward.default, (grad_out, *_op_args(case)))
    torch.library.opcheck(torch.ops.gr_scaling.hstu_attention_backward.default, (grad_out, *_op_args(case, rab=False)))


def test_flop_counter_counts_formula_once_forward_and_twice_backward():
    lengths = [5, 0, 1, 3]
    q, k, v, offsets, n, ts, pos_w, ts_w = _case(lengths, heads=2, dqk=3, dv=4, dtype=torch.float32)
    leaves = [x.requires_grad_(True) for x in (q, k, v, pos_w, ts_w)]
    formula = sum(x * x for x in lengths) * 2 * (3 + 4) * 2
    assert dense_attention_flops(offsets, 2, 3, 4) == formula
    with FlopCounterMode(display=False) as counter:
        out = kernels.hstu_attention(
            *leaves[:3], offsets, n, timestamps=ts, pos_weights=leaves[3], ts_weights=leaves[4]
        )
        out.sum().backward()
    counts = {str(key): value for key, value in counter.get_flop_counts()["Global"].items()}
    # Only our two ops: the padded einsums inside them are not counted a second time.
    assert counts == {"gr_scaling.hstu_attention": formula, "gr_scaling.hstu_attention_backward": 2 * formula}
    assert counter.get_total_flops() == 3 * formula


def test_invalid_inputs_raise_actionable_errors():
    q, k, v, offsets, n, ts, pos_w, ts_w = _case([3, 2], max_seq_len=3)
    with pytest.raises(ValueError, match="valid ones are"):
        kernels.hstu_attention(q, k, v, offsets, n, impl="cuda-magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_seq_len"):
        hstu_attention_reference(q, k, v, offsets, 2)
    with pytest.raises(ValueError, match="timestamps"):
        hstu_attention_reference(q, k, v, offsets, n, ts_weights=ts_w)
    with pytest.raises(ValueError, match="norm"):
        hstu_attention_reference(q, k, v, offsets, n, norm="sqrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="end at T"):
        hstu_attention_reference(q, k, v, torch.tensor([0, 3]), n)


@pytest.mark.parametrize("rab", [True, False])
def test_per_sequence_matmuls_match_the_reference_and_are_counted_not_asserted(rab):
    """The per-sequence form (what `flops --measure` counts) computes the same attention and
    gradients, and FlopCounterMode sees its matmuls (2 n^2 H (Dqk + Dv) forward, twice that
    backward), not the op's registered formula."""
    from kernels.per_sequence import per_sequence_attention

    lengths = [5, 0, 1, 3]
    q, k, v, offsets, n, ts, pos_w, ts_w = _case(lengths, heads=2, dqk=3, dv=4)
    request = _request_times(ts, offsets)
    leaves = [x.clone().requires_grad_(True) for x in ([q, k, v, pos_w, ts_w] if rab else [q, k, v])]
    kw = dict(timestamps=ts, pos_weights=leaves[3] if rab else None, ts_weights=leaves[4] if rab else None,
              request_timestamps=request)
    grad_out = torch.randn(q.shape[0], 2, 4, dtype=torch.float64)
    want = hstu_attention_reference(*leaves[:3], offsets, n, alpha=0.9, **kw)
    want_grads = torch.autograd.grad(want, leaves, grad_out)
    with per_sequence_attention(), FlopCounterMode(display=False) as counter:
        got = kernels.hstu_attention(*leaves[:3], offsets, n, alpha=0.9, impl="reference", **kw)
        got_grads = torch.autograd.grad(got, leaves, grad_out)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    counts = {str(key): value for key, value in counter.get_flop_counts()["Global"].items()}
    assert not any(op.startswith("gr_scaling") for op in counts)
    formula = sum(x * x for x in lengths) * 2 * (3 + 4) * 2
    assert counter.get_total_flops() == 3 * formula
