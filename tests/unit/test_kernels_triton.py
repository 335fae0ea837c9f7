"""Triton HSTU attention kernels vs the PyTorch reference, on CPU under TRITON_INTERPRET=1.

Triton reads TRITON_INTERPRET when it is first imported, and other test modules import it early
(torch.utils.flop_counter does), so tests/conftest.py must set the variable on machines without
CUDA. Setting it here only helps when this file runs alone, and only before triton is imported:
set later, it would turn these kernels into interpreted functions that call the compiled
triton.language helpers, which cannot work. Without an active interpreter the module runs
natively on CUDA when there is one, else skips.

Forward and all five gradients are compared with max |kernel - reference| / max |reference| per
tensor, in float32, over a seeded random subset of a shape grid plus explicit edge cases.
"""

from __future__ import annotations

import os
import sys

if "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import contextlib  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from host_syncs import HostSyncs  # noqa: E402
from kernels.hstu_attention import rab_tables, triton_common  # noqa: E402
from kernels.hstu_attention.rab_tables import FAR_TILE_MAX_EDGES, edge_table, far_tile_edge_counts  # noqa: E402
from kernels.hstu_attention.reference import (  # noqa: E402
    hstu_attention_reference,
    hstu_attention_reference_backward,
    time_buckets,
)
from kernels.hstu_attention.triton_bwd import hstu_attention_bwd_triton  # noqa: E402
from kernels.hstu_attention.triton_fwd import hstu_attention_fwd_triton  # noqa: E402

# The interpreter works only if triton itself was imported under it (its own helpers, such as
# tl.cdiv, are then interpreted too) and the kernels were decorated under it.
_INTERPRETER = triton_common.INTERPRET and isinstance(tl.cdiv, InterpretedFunction)
if _INTERPRETER:
    DEVICE = "cpu"
elif torch.cuda.is_available() and not triton_common.INTERPRET:
    DEVICE = "cuda"
else:
    DEVICE = None

pytestmark = [
    pytest.mark.triton_interpret,
    pytest.mark.skipif(
        DEVICE is None,
        reason="no CUDA, and triton was imported before TRITON_INTERPRET=1 was set; "
        "tests/conftest.py must set it when there is no CUDA",
    ),
]

# max |err| / max |ref| per tensor. Only float32 runs here; tests/gpu adds bf16.
TOLERANCE = {torch.float32: 1e-4}
GRAD_NAMES = ("dq", "dk", "dv", "d_pos", "d_ts")
# The interpreter runs fwd with BLOCK_M=32, BLOCK_N=16, dkdv with BLOCK_N=32, BLOCK_M=16 and dq
# with 32x32 tiles (FWD_CONFIGS, DKDV_CONFIGS, DQ_CONFIGS); the edge lengths straddle those sizes.
EDGE_LENGTHS = [16, 17, 32, 33, 64, 65, 31]


def make_case(lengths, heads, dqk, dv, max_seq_len, num_buckets, seed, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    offsets = torch.tensor([0, *torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist()], dtype=torch.int64)
    q = torch.randn(total, heads, dqk, generator=g)
    k = torch.randn(total, heads, dqk, generator=g)
    v = torch.randn(total, heads, dv, generator=g)
    dout = torch.randn(total, heads, dv, generator=g)
    # Chronological per sequence, as sessions look: a fifth of the steps zero (same second), most
    # under two minutes, one in twenty a pause log-uniform up to ~1e6 s. A query's gaps to its keys
    # cross many bucket edges, and a pause inside a tile makes it span more edges than the fast
    # path unrolls (`test_fast_rab_takes_both_tile_paths_and_matches_the_reference` counts both).
    steps = torch.randint(0, 120, (total,), generator=g) * (torch.rand(total, generator=g) > 0.2)
    pauses = torch.rand(total, generator=g) < 0.05
    steps = torch.where(pauses, torch.exp(torch.rand(total, generator=g) * 14).long(), steps)
    ts = 1_600_000_000 + steps.cumsum(0)
    # rab weights well above their N(0, 0.02) init, so a wrong index shows up in the output.
    pos_w = 0.5 * torch.randn(2 * max_seq_len - 1, generator=g)
    ts_w = 0.5 * torch.randn(num_buckets + 1, generator=g)
    tensors = [x.to(device) for x in (q, k, v, dout)]
    q, k, v, dout = [x.to(dtype) for x in tensors]
    return q, k, v, dout, offsets.to(device), ts.to(device), pos_w.to(device), ts_w.to(device)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    scale = want.double().abs().max().item() if want.numel() else 0.0
    return err / scale if scale > 0 else err


def request_times(ts, offsets, seed):
    """Per sequence, a request time after its last event (up to ~1e6 s later), as the model passes."""
    g = torch.Generator().manual_seed(seed)
    ends = offsets.cpu()
    last = torch.tensor([int(ts[e - 1]) if e > s else 1_600_000_000 for s, e in zip(ends[:-1], ends[1:])])
    return (last + torch.exp(torch.rand(last.numel(), generator=g) * 14).long()).to(ts.device)


def check_against_reference(lengths, heads, dqk, dv, max_seq_len, rab, norm, alpha=0.5, num_buckets=128,
                            seed=0, dtype=torch.float32, device="cpu", tol=None, layout="contiguous",
                            request=False, timestamps=None):
    q, k, v, dout, offsets, ts, pos_w, ts_w = make_case(
        lengths, heads, dqk, dv, max_seq_len, num_buckets, seed, dtype, device)
    if timestamps is not None:
        ts = timestamps.to(device)
    if layout == "fused":
        # q, k, v as views into one [T, H, 2*Dqk + Dv] projection, like HSTU's uvqk split.
        fused = torch.cat([q, k, v], dim=2)
        q, k, v = fused[:, :, :dqk], fused[:, :, dqk:2 * dqk], fused[:, :, 2 * dqk:]
    if layout == "int32_offsets":
        offsets = offsets.to(torch.int32)
    pos_w = pos_w if rab in ("pos", "both") else None
    ts_w = ts_w if rab in ("ts", "both") else None
    args = (q, k, v, offsets, max_seq_len)
    kw = dict(timestamps=ts, pos_weights=pos_w, ts_weights=ts_w,
              request_timestamps=request_times(ts, offsets, seed) if request else None)
    tol = TOLERANCE[dtype] if tol is None else tol

    out = hstu_attention_fwd_triton(*args, alpha, norm, **kw)
    want = hstu_attention_reference(*args, alpha=alpha, norm=norm, **kw)
    assert rel_err(out, want) <= tol, f"forward: {rel_err(out, want):.3g}"

    grads = hstu_attention_bwd_triton(dout, *args, alpha, norm, **kw)
    want_grads = hstu_attention_reference_backward(dout, *args, alpha=alpha, norm=norm, **kw)
    for name, g, w in zip(GRAD_NAMES, grads, want_grads):
        if w is None:
            assert g is None, name
            continue
        assert rel_err(g, w) <= tol, f"{name}: {rel_err(g, w):.3g}"


def _grid_cases(count: int, seed: int = 20240611) -> list[dict]:
    """A seeded sample of B 1-6, H 1-4, D in {16, 32, 64}, lengths 0..300, rab x norm."""
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        num_seqs = rng.randint(1, 6)
        lengths = [rng.choice([0, 1, rng.randint(2, 300)]) if rng.random() < 0.3 else rng.randint(0, 300)
                   for _ in range(num_seqs)]
        if i % 3 == 0:  # make sure 0 and 1 appear next to ordinary lengths
            lengths[rng.randrange(num_seqs)] = rng.choice([0, 1])
        cases.append(dict(
            lengths=lengths,
            heads=rng.randint(1, 4),
            dqk=rng.choice([16, 32, 64]),
            dv=rng.choice([16, 32, 64]),
            max_seq_len=max([300, *lengths]),
            rab=("none", "pos", "ts", "both")[i % 4],
            norm=("max_len", "seq_len")[(i // 2) % 2],
            alpha=rng.choice([0.25, 0.7, 1.0]),
            seed=i,
            request=i % 2 == 1,
        ))
    return cases


@pytest.mark.parametrize("case", _grid_cases(10), ids=lambda c: f"B{len(c['lengths'])}H{c['heads']}"
                         f"d{c['dqk']}x{c['dv']}-{c['rab']}-{c['norm']}{'-request' if c['request'] else ''}")
def test_matches_reference_on_random_grid(case):
    check_against_reference(device=DEVICE, **case)


@pytest.mark.parametrize(
    "name, lengths, max_seq_len, rab, norm",
    [
        ("all_empty", [0, 0, 0], 8, "both", "seq_len"),
        ("single_length_1", [1], 1, "both", "max_len"),
        ("block_edges", EDGE_LENGTHS, 65, "both", "max_len"),
        ("block_edges_seq_norm", EDGE_LENGTHS, 65, "pos", "seq_len"),
        ("short_in_long_max_len", [3, 0, 40], 200, "ts", "max_len"),
    ],
)
def test_edge_lengths(name, lengths, max_seq_len, rab, norm):
    check_against_reference(lengths, 2, 16, 32, max_seq_len, rab, norm, device=DEVICE)


@pytest.mark.parametrize("lengths", [[0, 1, 2], EDGE_LENGTHS])
def test_request_time_of_the_last_query(lengths):
    # The last query of each sequence is scored at its request time, in every kernel.
    check_against_reference(lengths, 2, 16, 16, 65, "ts", "max_len", device=DEVICE, request=True)


def test_unpadded_head_dims_and_few_buckets():
    # ML-1M's HSTU-large uses d = 25 (not a power of two); 5 buckets make most gaps clamp.
    check_against_reference([40, 7, 0, 33], 2, 25, 50, 64, "both", "max_len", num_buckets=5, device=DEVICE)


@pytest.mark.parametrize("layout", ["fused", "int32_offsets"])
def test_strided_views_and_int32_offsets(layout):
    check_against_reference([20, 35, 1], 2, 16, 16, 40, "both", "seq_len", device=DEVICE, layout=layout)


def test_unsorted_timestamps_take_the_exact_path_and_say_so(caplog):
    # The per-logit path assumes nothing about the order of timestamps; the fast one needs it.
    lengths, heads, d, n = [50, 19], 2, 16, 64
    q, k, v, dout, offsets, ts, pos_w, ts_w = make_case(lengths, heads, d, d, n, 40, seed=3, device=DEVICE)
    ts = ts[torch.randperm(ts.numel(), generator=torch.Generator().manual_seed(0)).to(ts.device)]
    kw = dict(timestamps=ts, pos_weights=pos_w, ts_weights=ts_w)
    rab_tables._logged_fallback = False
    with caplog.at_level(logging.INFO, logger="kernels.hstu_attention.rab_tables"):
        grads = hstu_attention_bwd_triton(dout, q, k, v, offsets, n, 0.5, "max_len", **kw)
    assert "exact per-logit path" in caplog.text
    want = hstu_attention_reference_backward(dout, q, k, v, offsets, n, alpha=0.5, norm="max_len", **kw)
    for name, g, w in zip(GRAD_NAMES, grads, want):
        assert rel_err(g, w) <= TOLERANCE[torch.float32], name


def _mixed_timestamps(lengths, seed):
    """Mostly steady clicks (a minute or so apart, ties included) with a few long pauses."""
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    steps = torch.randint(0, 90, (total,), generator=g)
    pauses = torch.rand(total, generator=g) < 0.03
    steps = torch.where(pauses, torch.exp(torch.rand(total, generator=g) * 16).long(), steps)
    return 1_600_000_000 + steps.cumsum(0)


def _merged_edge_runs(edges: torch.Tensor, offsets: torch.Tensor, block_q: int, block_k: int) -> tuple[int, int]:
    """(edges, edges equal on every row to the next one) over the far tiles spanning more than
    FAR_TILE_MAX_EDGES edges: the many-edge loop merges the latter (`time_weights_loop`)."""
    total = equal = 0
    for b in range(offsets.numel() - 1):
        start, n = int(offsets[b]), int(offsets[b + 1] - offsets[b])
        for m0 in range(0, n, block_q):
            rows = edges[:, start + m0: start + min(m0 + block_q, n)]
            for n0 in range(0, (m0 // block_k) * block_k, block_k):
                lo = int((rows[:, 0] >= n0 + block_k - 1).sum())
                hi = int((rows[:, -1] >= n0).sum())
                if hi - lo > FAR_TILE_MAX_EDGES:
                    total += hi - lo
                    equal += sum(bool(torch.equal(rows[k - 1], rows[k])) for k in range(lo + 1, hi))
    return total, equal


def _many_edge_tiles_by_band(edges: torch.Tensor, offsets: torch.Tensor, block_q: int, block_k: int
                             ) -> tuple[int, int]:
    """(far tiles spanning more than FAR_TILE_MAX_EDGES edges within the band's reach, beyond it):
    the first are redone from the band, the others by the loop over their edges."""
    within = beyond = 0
    for b in range(offsets.numel() - 1):
        start, n = int(offsets[b]), int(offsets[b + 1] - offsets[b])
        for m0 in range(0, n, block_q):
            last = min(m0 + block_q, n) - 1
            for n0 in range(0, (m0 // block_k) * block_k, block_k):
                lo = int((edges[:, start + m0] >= n0 + block_k - 1).sum())
                hi = int((edges[:, start + last] >= n0).sum())
                if hi - lo > FAR_TILE_MAX_EDGES:
                    within += last - n0 < 256
                    beyond += last - n0 >= 256
    return within, beyond


def test_fast_rab_takes_every_tile_path_and_matches_the_reference():
    """Far tiles within MAX_EDGES edges take the unrolled edges, the others are redone: from the
    band near the diagonal, else by the loop over their edges (merging runs of edges passing the
    same pairs). All exact."""
    lengths, n = [420, 97, 0, 1, 64], 420
    ts = _mixed_timestamps(lengths, seed=5)
    # The first sequence: an event every 30 s but for one pause of ~4 months after its 100th. Its
    # later queries see the keys before the pause ~24 buckets away from those after it, in tiles
    # beyond the band's reach too.
    ts[:420] = 1_600_000_000 + 30 * torch.arange(420) + 10**7 * (torch.arange(420) >= 100)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    edges = edge_table(ts, ts[offsets[1:].clamp(min=1) - 1], offsets, 128)
    spans = far_tile_edge_counts(edges, offsets, 32, 16)  # the forward's tiles here (FWD_CONFIGS)
    fast, redone = int((spans <= FAR_TILE_MAX_EDGES).sum()), int((spans > FAR_TILE_MAX_EDGES).sum())
    assert fast >= 10 and redone >= 3, (fast, redone)
    within, beyond = _many_edge_tiles_by_band(edges, offsets, 32, 16)
    assert within >= 3 and beyond >= 3, (within, beyond)
    many, merged = _merged_edge_runs(edges, offsets, 32, 16)
    assert 0 < merged < many, (many, merged)  # the loop both merges edges and applies them
    check_against_reference(lengths, 2, 16, 16, n, "both", "seq_len", device=DEVICE, timestamps=ts, seed=5)
    check_against_reference(lengths, 1, 16, 32, n, "ts", "max_len", device=DEVICE, timestamps=ts, seed=6,
                            request=True)


def test_the_largest_tile_configs_read_the_diagonal_band_exactly():
    """The GPU's largest tiles (128x128 forward and dq, 128-key dk/dv, 64 in the rab-gradient
    kernel) put pairs up to 254 apart in one diagonal tile, near the band's 256, and read keys a
    whole block past short sequences' ends (the band's slack): the interpreter runs them here on
    sequences longer and shorter than a tile."""
    lengths, n = [300, 5, 0, 130, 1], 300
    q, k, v, dout, offsets, ts, pos_w, ts_w = make_case(lengths, 1, 16, 16, n, 128, seed=11)
    kw = dict(timestamps=ts, pos_weights=pos_w, ts_weights=ts_w, request_timestamps=request_times(ts, offsets, 11))
    args = (q, k, v, offsets, n)
    out = hstu_attention_fwd_triton(*args, 0.5, "seq_len", **kw,
                                    config=dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2))
    assert rel_err(out, hstu_attention_reference(*args, alpha=0.5, norm="seq_len", **kw)) <= 1e-4
    grads = hstu_attention_bwd_triton(dout, *args, 0.5, "seq_len", **kw,
                                      dkdv_config=dict(BLOCK_N=128, BLOCK_M=64, num_warps=8, num_stages=2),
                                      dq_config=dict(BLOCK=128, num_warps=8, num_stages=2),
                                      rab_grad_config=dict(BLOCK=64, num_warps=4, num_stages=2))
    want = hstu_attention_reference_backward(dout, *args, alpha=0.5, norm="seq_len", **kw)
    for name, got, w in zip(GRAD_NAMES, grads, want):
        assert rel_err(got, w) <= 1e-4, name


def test_fast_math_paths_match_the_reference(monkeypatch):
    """The 16-bit inputs' algebra (logits halved with alpha and the bias weights, silu and its
    gradient from tanh), run under the interpreter with fast math forced and an exact tanh in
    place of tanh.approx."""
    from kernels.hstu_attention import triton_bwd, triton_fwd

    for module in (triton_fwd, triton_bwd):
        monkeypatch.setattr(module, "fast_math", lambda dtype: True)
    lengths, n = [150, 97, 0, 1, 64], 160
    check_against_reference(lengths, 2, 16, 16, n, "both", "seq_len", device=DEVICE,
                            timestamps=_mixed_timestamps(lengths, seed=7), seed=7)
    # Unsorted timestamps: the per-logit bias, from the weights halved as the logits are.
    order = torch.randperm(sum(lengths), generator=torch.Generator().manual_seed(8))
    shuffled = _mixed_timestamps(lengths, seed=8)[order]
    check_against_reference(lengths, 1, 16, 16, n, "both", "max_len", device=DEVICE, timestamps=shuffled, seed=8)


def test_weight_gradients_are_bit_identical_across_runs():
    # Several rab-gradient programs per sequence (4 at the interpreter's 32-row blocks) and a
    # many-edge tile, so the scratch rows of many programs are summed.
    lengths, n = [97, 40, 64], 100
    q, k, v, dout, offsets, _, pos_w, ts_w = make_case(lengths, 2, 16, 16, n, 128, seed=9, device=DEVICE)
    kw = dict(timestamps=_mixed_timestamps(lengths, seed=9).to(DEVICE), pos_weights=pos_w, ts_weights=ts_w)
    first = hstu_attention_bwd_triton(dout, q, k, v, offsets, n, 0.5, "seq_len", **kw)
    second = hstu_attention_bwd_triton(dout, q, k, v, offsets, n, 0.5, "seq_len", **kw)
    for name, a, b in zip(GRAD_NAMES, first, second):
        assert torch.equal(a, b), name


@triton.jit
def _bucket_kernel(TS_Q, TS_K, OUT, THR, num_buckets, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    base = tl.load(TS_K)  # rebased like the kernels: to the first key's time
    q_hi, q_lo = triton_common.split_time(tl.load(TS_Q + offs, mask=ok, other=0), base)
    k_hi, k_lo = triton_common.split_time(tl.load(TS_K + offs, mask=ok, other=0), base)
    tl.store(OUT + offs, triton_common.time_bucket(q_hi - k_hi, q_lo - k_lo, THR, num_buckets), mask=ok)


@pytest.mark.parametrize("num_buckets", [128, 7])
def test_time_bucket_matches_reference_at_every_edge(num_buckets):
    """Gaps at each bucket edge and one second either side: float32 alone gets some wrong."""
    thr = torch.tensor([t for t in triton_common._threshold_values(128)[1:] if t < 2**45], dtype=torch.int64)
    gaps = torch.cat([thr - 1, thr, thr + 1, -thr, -(thr - 1), torch.tensor([0, 1, -1, 2, 10**12, -(10**13)])])
    # Keys at arbitrary large (unaligned) times, queries gap seconds later.
    ts_k = 1_700_000_000_123 + torch.randint(-(10**12), 10**12, gaps.shape, generator=torch.Generator().manual_seed(0))
    ts_q = ts_k + gaps
    ts_q, ts_k = ts_q.to(DEVICE), ts_k.to(DEVICE)
    out = torch.empty(gaps.numel(), dtype=torch.int32, device=DEVICE)
    table = triton_common.bucket_thresholds(num_buckets, ts_q.device)
    _bucket_kernel[(triton.cdiv(gaps.numel(), 64),)](ts_q, ts_k, out, table, num_buckets, gaps.numel(), BLOCK=64)
    want = time_buckets(gaps, num_buckets).to(DEVICE)
    mismatch = (out.long() != want).nonzero().flatten()
    assert mismatch.numel() == 0, f"gaps {gaps[mismatch.cpu()].tolist()}: {out[mismatch].tolist()} vs {want[mismatch].tolist()}"


def test_rejects_bad_inputs():
    q = torch.zeros(4, 1, 16, device=DEVICE)
    offsets = torch.tensor([0, 4], device=DEVICE)
    with pytest.raises(ValueError, match="norm"):
        hstu_attention_fwd_triton(q, q, q, offsets, 4, 1.0, "mean", None, None, None)
    with pytest.raises(ValueError, match="pos_weights"):
        hstu_attention_fwd_triton(q, q, q, offsets, 4, 1.0, "max_len", None, torch.zeros(3, device=DEVICE), None)
    with pytest.raises(ValueError, match="timestamps"):
        hstu_attention_bwd_triton(q, q, q, q, offsets, 4, 1.0, "max_len", None, None, torch.zeros(3, device=DEVICE))


@pytest.mark.triton_interpret
def test_public_op_with_triton_impl_matches_reference_through_autograd() -> None:
    """`kernels.hstu_attention(impl="triton")` runs the kernels inside the custom op, with autograd."""
    import kernels

    gen = torch.Generator().manual_seed(7)
    lengths = [0, 1, 37, 70]
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64)
    total, heads, dqk, dv, n = offsets[-1].item(), 2, 16, 32, 80
    timestamps = torch.cat([torch.sort(torch.randint(0, 10**6, (m,), generator=gen)).values for m in lengths])
    inputs = {
        "q": torch.randn(total, heads, dqk, generator=gen),
        "k": torch.randn(total, heads, dqk, generator=gen),
        "v": torch.randn(total, heads, dv, generator=gen),
        "pos": 0.1 * torch.randn(2 * n - 1, generator=gen),
        "ts": 0.1 * torch.randn(11, generator=gen),
    }
    grad_out = torch.randn(total, heads, dv, generator=gen)
    results = {}
    for impl in ("reference", "triton"):
        leaves = {name: t.clone().requires_grad_(True) for name, t in inputs.items()}
        out = kernels.hstu_attention(
            leaves["q"], leaves["k"], leaves["v"], offsets, n, norm="seq_len", timestamps=timestamps,
            pos_weights=leaves["pos"], ts_weights=leaves["ts"], impl=impl,
        )
        out.backward(grad_out)
        results[impl] = (out.detach(), {name: leaf.grad for name, leaf in leaves.items()})
    ref_out, ref_grads = results["reference"]
    out, grads = results["triton"]
    scale = ref_out.abs().max()
    assert (out - ref_out).abs().max() <= 1e-4 * scale
    for name, ref_grad in ref_grads.items():
        assert (grads[name] - ref_grad).abs().max() <= 1e-4 * ref_grad.abs().max(), name


@pytest.mark.triton_interpret
def test_model_config_selects_the_triton_kernel() -> None:
    """model.attention_impl = "triton" runs the HSTU encoder through the kernel, same outputs."""
    import dataclasses

    from gr_core.config import ModelConfig
    from gr_core.families import HSTUOptions
    from gr_core.hstu import HSTU

    cfg = ModelConfig(num_blocks=2, embedding_dim=16, num_heads=2, max_seq_len=20, dropout=0.0)
    torch.manual_seed(0)
    reference = HSTU(dataclasses.replace(cfg, options=HSTUOptions(attention_impl="reference")), num_items=30)
    triton_model = HSTU(dataclasses.replace(cfg, options=HSTUOptions(attention_impl="triton")), num_items=30)
    triton_model.load_state_dict(reference.state_dict())
    offsets = torch.tensor([0, 1, 9, 20], dtype=torch.int64)
    ids = torch.randint(1, 31, (20,))
    timestamps = torch.arange(20, dtype=torch.int64) * 3600
    expected = reference(ids, timestamps, offsets)
    got = triton_model(ids, timestamps, offsets)
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.triton_interpret
def test_the_layers_of_a_training_step_share_one_build_of_the_time_tables() -> None:
    """Every block gets the same timestamps, request times and offsets: inside the model's own
    `batch_scope` the edge tables (and their host sync) are built once per forward, not once per
    block, and the backward builds them per block; inside one around the forward and the backward
    (the trainer's) once per step. A batch written in place gets new ones."""
    import dataclasses

    from gr_core.config import ModelConfig
    from gr_core.families import HSTUOptions
    from gr_core.hstu import HSTU
    from kernels.hstu_attention import batch_scope

    blocks = 3
    cfg = ModelConfig(num_blocks=blocks, embedding_dim=16, num_heads=2, max_seq_len=40, dropout=0.0)
    torch.manual_seed(0)
    reference = HSTU(dataclasses.replace(cfg, options=HSTUOptions(attention_impl="reference")), num_items=30)
    triton_model = HSTU(dataclasses.replace(cfg, options=HSTUOptions(attention_impl="triton")), num_items=30)
    for block in reference.blocks:  # weights well above their init, so a wrong bucket shows
        block.ts_weights.data.normal_(0.0, 0.5)
    triton_model.load_state_dict(reference.state_dict())
    offsets = torch.tensor([0, 1, 25, 40], dtype=torch.int64)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 31, (40,), generator=gen)
    timestamps = torch.cat([torch.sort(torch.randint(0, 10**6, (n,), generator=gen)).values for n in (1, 24, 15)])
    request = torch.tensor([2 * 10**6, 2 * 10**6, 3 * 10**6])
    weights = torch.randn(40, 16, generator=gen)

    def step(model):
        model.zero_grad()
        out = model(ids, timestamps, offsets, request)
        (out * weights).sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for whole_step in (False, True, True):
        built = rab_tables.TIME_TABLES.computed
        # Outside the attention op (whose inner ops a dispatch mode does not see: its one sync is
        # the table build counted here), the step never waits for the device.
        with HostSyncs() as seen, (batch_scope() if whole_step else contextlib.nullcontext()):
            out, grads = step(triton_model)
        assert seen.syncs == []
        assert rab_tables.TIME_TABLES.computed - built == (1 if whole_step else 1 + blocks)
        want, want_grads = step(reference)
        assert (out - want).abs().max() <= 1e-4 * want.abs().max()
        for got, ref in zip(grads, want_grads, strict=True):
            assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
        timestamps.mul_(3)  # still sorted; every gap three times longer: other buckets


def test_a_trainer_step_builds_the_time_tables_once() -> None:
    """`Trainer.step` opens the scope around a micro-batch's forward and backward: one build of
    the edge tables per optimizer step, whatever the blocks."""
    import dataclasses

    from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from gr_core.families import HSTUOptions
    from gr_core.trainer import Trainer

    cfg = RunConfig(
        data=DataConfig(num_users=60, num_items=30, num_clusters=3, max_events=12),
        model=ModelConfig(num_blocks=3, embedding_dim=8, num_heads=1, max_seq_len=10, dropout=0.0,
                          options=HSTUOptions(attention_impl="triton")),
        train=TrainConfig(epochs=1, batch_size=32, num_negatives=4),
    )
    trainer = Trainer(cfg)
    built = rab_tables.TIME_TABLES.computed
    trainer.train_epoch()
    assert trainer.progress.step >= 2
    assert rab_tables.TIME_TABLES.computed - built == trainer.progress.step
