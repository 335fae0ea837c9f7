"""The CPU's padded HSTU attention against the readable reference, and its per-batch memo."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels.hstu_attention import padded
from kernels.hstu_attention.op import hstu_attention_op
from kernels.hstu_attention.padded import batch_maps, hstu_attention_padded, hstu_attention_padded_backward
from kernels.hstu_attention.reference import hstu_attention_reference, hstu_attention_reference_backward
from test_kernels_reference import LENGTHS, _case, _request_times


def _inputs(lengths, rab, with_request, dtype=torch.float64, seed=0):
    q, k, v, offsets, n, ts, pos_w, ts_w = _case(lengths, dtype=dtype, seed=seed)
    request = _request_times(ts, offsets) if with_request else None
    return dict(
        q=q, k=k, v=v, seq_offsets=offsets, max_seq_len=n, timestamps=ts, request_timestamps=request,
        pos_weights=pos_w if rab in ("pos", "both") else None, ts_weights=ts_w if rab in ("ts", "both") else None,
    )


def _call(fn, args, *extra, alpha=0.7, norm="max_len"):
    a = dict(args)
    positional = [a.pop(name) for name in ("q", "k", "v", "seq_offsets", "max_seq_len")]
    return fn(*extra, *positional, alpha=alpha, norm=norm, **a)


@pytest.mark.parametrize("lengths", LENGTHS + [[50, 1, 17, 0, 33]])
@pytest.mark.parametrize("norm", ["max_len", "seq_len"])
@pytest.mark.parametrize("rab", ["none", "pos", "ts", "both"])
@pytest.mark.parametrize("with_request", [False, True])
def test_padded_equals_reference_forward_and_backward(lengths, norm, rab, with_request):
    args = _inputs(lengths, rab, with_request)
    if max(lengths) > args["max_seq_len"]:
        args = _inputs(lengths, rab, with_request) | {"max_seq_len": 64}
        g = torch.Generator().manual_seed(3)
        if args["pos_weights"] is not None:
            args["pos_weights"] = torch.randn(127, generator=g, dtype=torch.float64)
    got = _call(hstu_attention_padded, args, norm=norm)
    want = _call(hstu_attention_reference, args, norm=norm)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    grad_out = torch.randn(got.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got_grads = _call(hstu_attention_padded_backward, args, grad_out, norm=norm)
    want_grads = _call(hstu_attention_reference_backward, args, grad_out, norm=norm)
    for name, g, w in zip(("dq", "dk", "dv", "d_pos", "d_ts"), got_grads, want_grads, strict=True):
        if w is None:
            assert g is None, name
        else:
            assert g.shape == w.shape and g.dtype == w.dtype, name
            torch.testing.assert_close(g, w, rtol=1e-11, atol=1e-12, msg=name)


def test_padded_float32_within_rounding_of_the_reference():
    args = _inputs([6, 3, 0, 5], "both", True, dtype=torch.float32)
    got = _call(hstu_attention_padded, args)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, _call(hstu_attention_reference, args), rtol=1e-5, atol=1e-6)
    grad_out = torch.randn(got.shape, generator=torch.Generator().manual_seed(2))
    for g, w in zip(_call(hstu_attention_padded_backward, args, grad_out),
                    _call(hstu_attention_reference_backward, args, grad_out), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_auto_is_padded_on_cpu_and_gradcheck_passes():
    args = _inputs([3, 0, 1, 2], "both", True)
    leaves = [args[name].clone().requires_grad_(True) for name in ("q", "k", "v", "pos_weights", "ts_weights")]

    def f(q, k, v, pw, tw):
        return hstu_attention_op(q, k, v, args["seq_offsets"], args["max_seq_len"], 0.9, "seq_len",
                                 args["timestamps"], pw, tw, args["request_timestamps"], "padded")

    assert torch.autograd.gradcheck(f, leaves)
    assert kernels.hstu_attention.__globals__["_resolve"]("auto", leaves[0]) == "padded"


def test_maps_are_reused_for_equal_inputs_and_rebuilt_when_they_change():
    args = _inputs([4, 2, 5], "both", True)
    offsets, ts, request = args["seq_offsets"], args["timestamps"], args["request_timestamps"]
    first = batch_maps(offsets, 6, ts, request, 6)
    # Equal by value, other objects (what each layer and the backward pass): the same maps.
    assert batch_maps(offsets.clone(), 6, ts.clone(), request.clone(), 6) is first
    # Anything the maps depend on differs: new maps.
    assert batch_maps(offsets, 7, ts, request, 6) is not first
    assert batch_maps(offsets, 6, ts, request, 5) is not batch_maps(offsets, 6, ts, request, 6)
    assert batch_maps(offsets, 6, ts, None, 6) is not batch_maps(offsets, 6, ts, request, 6)
    # Without the time bias, timestamps do not count.
    no_time = batch_maps(offsets, 6, ts, request, None)
    assert batch_maps(offsets, 6, ts + 10**6, None, None) is no_time


def test_a_tensor_changed_in_place_is_not_mistaken_for_the_one_the_maps_came_from():
    args = _inputs([5, 6], "ts", False)
    before = _call(hstu_attention_padded, args)
    ts = args["timestamps"]
    ts[3:] += 10**7  # same object, new values: the time buckets of later keys change
    after = _call(hstu_attention_padded, args)
    torch.testing.assert_close(after, _call(hstu_attention_reference, args), rtol=1e-12, atol=1e-13)
    assert not torch.allclose(before, after)
    offsets = args["seq_offsets"]
    offsets[1] = 6  # [6, 5] instead of [5, 6]
    torch.testing.assert_close(_call(hstu_attention_padded, args), _call(hstu_attention_reference, args),
                               rtol=1e-12, atol=1e-13)


def test_memo_keeps_copies_not_the_callers_tensors():
    args = _inputs([3, 3], "ts", False)
    maps = batch_maps(args["seq_offsets"], 6, args["timestamps"], None, 6)
    assert maps.timestamps is not args["timestamps"] and maps.seq_offsets is not args["seq_offsets"]
    assert padded._last_maps is maps


def test_invalid_offsets_raise_the_reference_errors():
    args = _inputs([3, 2], "none", False)
    for bad, message in ((torch.tensor([0, 3, 4]), "end at T=5"), (torch.tensor([0, 4, 3, 5]), "non-decreasing"),
                         (torch.tensor([0.0, 5.0]), "int32 or int64")):
        with pytest.raises(ValueError, match=message):
            _call(hstu_attention_padded, args | {"seq_offsets": bad})
    with pytest.raises(ValueError, match="max_seq_len"):
        _call(hstu_attention_padded, args | {"max_seq_len": 2, "pos_weights": None})
