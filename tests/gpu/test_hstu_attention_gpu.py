"""Triton HSTU attention kernels vs the PyTorch reference, natively on CUDA (fp32 and bf16).

Compared as max |kernel - reference| / max |reference| per tensor (output and all five
gradients). The reference upcasts half inputs to float32, so the bf16 tolerance covers the
kernel's bf16 operands of the second matmul of each pair (p, ds) and its bf16 outputs.

Most cases pin one block config (`config=`), so a run compiles a handful of kernels instead of
tuning every shape; `test_every_tuning_candidate` checks each candidate once and
`test_autotuned_path` the autotuner itself.
"""

from __future__ import annotations

import pytest
import torch

from kernels.hstu_attention import triton_common
from kernels.hstu_attention.reference import hstu_attention_reference, hstu_attention_reference_backward
from kernels.hstu_attention.triton_bwd import DKDV_CONFIGS, DQ_CONFIGS, hstu_attention_bwd_triton
from kernels.hstu_attention.triton_rab_grad import RAB_GRAD_CONFIGS
from kernels.hstu_attention.triton_fwd import FWD_CONFIGS, hstu_attention_fwd_triton

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(triton_common.INTERPRET, reason="TRITON_INTERPRET=1 is set: kernels are not compiled"),
]

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
GRAD_NAMES = ("dq", "dk", "dv", "d_pos", "d_ts")


def make_case(lengths, heads, dqk, dv, max_seq_len, num_buckets, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    offsets = torch.tensor([0, *torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist()], dtype=torch.int64)
    q, k = torch.randn(total, heads, dqk, generator=g), torch.randn(total, heads, dqk, generator=g)
    v, dout = torch.randn(total, heads, dv, generator=g), torch.randn(total, heads, dv, generator=g)
    gaps = torch.exp(torch.rand(total, generator=g) * 14).long() * (torch.rand(total, generator=g) > 0.2)
    ts = 1_600_000_000 + gaps.cumsum(0)
    # Bias weights stay float32 (parameters), as under autocast; 0.5 makes index errors visible.
    pos_w = 0.5 * torch.randn(2 * max_seq_len - 1, generator=g)
    ts_w = 0.5 * torch.randn(num_buckets + 1, generator=g)
    dev = "cuda"
    return ([x.to(dev, dtype) for x in (q, k, v, dout)], offsets.to(dev), ts.to(dev), pos_w.to(dev), ts_w.to(dev))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype
    if got.numel() == 0:
        return 0.0
    scale = want.double().abs().max().item()
    err = (got.double() - want.double()).abs().max().item()
    return err / scale if scale > 0 else err


def check(lengths, heads, dqk, dv, max_seq_len, rab, norm, dtype, *, alpha=0.5, seed=0, num_buckets=128,
          fwd_config=None, dkdv_config=None, dq_config=None, rab_grad_config=None, pinned=True):
    (q, k, v, dout), offsets, ts, pos_w, ts_w = make_case(lengths, heads, dqk, dv, max_seq_len, num_buckets, seed, dtype)
    pos_w = pos_w if rab in ("pos", "both") else None
    ts_w = ts_w if rab in ("ts", "both") else None
    args = (q, k, v, offsets, max_seq_len)
    kw = dict(timestamps=ts, pos_weights=pos_w, ts_weights=ts_w)
    if pinned:
        fwd_config = fwd_config or FWD_CONFIGS[0]
        dkdv_config = dkdv_config or DKDV_CONFIGS[0]
        dq_config = dq_config or DQ_CONFIGS[0]
        rab_grad_config = rab_grad_config or RAB_GRAD_CONFIGS[0]
    tol = TOLERANCE[dtype]

    out = hstu_attention_fwd_triton(*args, alpha, norm, **kw, config=fwd_config)
    want = hstu_attention_reference(*args, alpha=alpha, norm=norm, **kw)
    errors = {"out": rel_err(out, want)}
    grads = hstu_attention_bwd_triton(dout, *args, alpha, norm, **kw, dkdv_config=dkdv_config, dq_config=dq_config,
                                      rab_grad_config=rab_grad_config)
    want_grads = hstu_attention_reference_backward(dout, *args, alpha=alpha, norm=norm, **kw)
    for name, g, w in zip(GRAD_NAMES, grads, want_grads):
        assert (g is None) == (w is None), name
        if w is not None:
            errors[name] = rel_err(g, w)
    bad = {k: e for k, e in errors.items() if not e <= tol}
    assert not bad, f"errors above {tol}: {bad} (all: {errors})"


LONG = [2048, 1, 0, 1500, 777, 129]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("norm", ["max_len", "seq_len"])
@pytest.mark.parametrize("rab", ["none", "both"])
def test_long_jagged_d64(dtype, norm, rab):
    check(LONG, 2, 64, 64, 2048, rab, norm, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "lengths, heads, dqk, dv, max_seq_len, rab",
    [
        ([0, 0], 2, 32, 32, 16, "both"),
        ([1], 3, 16, 32, 1, "both"),
        ([64, 65, 128, 129, 63, 127], 4, 32, 16, 200, "pos"),
        ([300, 5, 211, 0, 1], 1, 16, 64, 300, "ts"),
        ([200, 50, 177], 2, 50, 25, 211, "both"),  # ML-1M's unpadded head dims, upstream's N
    ],
)
def test_shapes_and_edges(dtype, lengths, heads, dqk, dv, max_seq_len, rab):
    check(lengths, heads, dqk, dv, max_seq_len, rab, "max_len", dtype)


@pytest.mark.parametrize("which, index", [("fwd", i) for i in range(len(FWD_CONFIGS))]
                         + [("dkdv", i) for i in range(len(DKDV_CONFIGS))]
                         + [("dq", i) for i in range(len(DQ_CONFIGS))]
                         + [("rab_grad", i) for i in range(len(RAB_GRAD_CONFIGS))])
def test_every_tuning_candidate(which, index):
    configs = {"fwd": FWD_CONFIGS, "dkdv": DKDV_CONFIGS, "dq": DQ_CONFIGS, "rab_grad": RAB_GRAD_CONFIGS}[which]
    check([700, 1, 129, 64, 333], 2, 64, 64, 1024, "both", "seq_len", torch.bfloat16,
          **{f"{which}_config": configs[index]})


def test_autotuned_path():
    check([1024, 1000, 3, 513], 2, 64, 64, 1024, "both", "max_len", torch.bfloat16, pinned=False)
