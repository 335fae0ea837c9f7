"""Benchmark jagged HSTU attention: the Triton kernels vs the padded PyTorch reference vs SDPA flash.

    python benchmarks/attention.py                  # CUDA: writes benchmarks/results/attention-<device>.json
    python benchmarks/attention.py --interpret-smoke  # CPU: one tiny case under TRITON_INTERPRET=1
    python benchmarks/attention.py --baseline ../old   # also the Triton rows of another checkout, same run

For each max length N, a batch of jagged sequences with lengths uniform in [N/4, N] is drawn until
a fixed token budget is reached (so B shrinks as N grows). Implementations, all bf16 inputs:

- triton       : Triton kernels with the full relative bias (positional + time), as HSTU uses them
- triton_norab : the same kernels without the bias
- triton_exact_rab : the same kernels with the bias computed per logit on every tile (the path
                 before the fast one, kept for unsorted timestamps): what the fast path gains
- reference    : `reference.py` (pads to [B, H, N, N] in float32); "oom" where it does not fit
- sdpa_flash   : causal softmax attention, torch SDPA restricted to the flash backend, on inputs
                 padded to [B, H, N, D] beforehand (padding not timed: a padded model keeps them)

TFLOP/s use one numerator for every row, the causal-exact jagged count
sum_b n_b (n_b + 1) / 2 * 2 * H * (Dqk + Dv) for the forward and 3x that for forward+backward,
so a ratio of TFLOP/s is a ratio of speed on the same useful work (SDPA and the reference also
compute padding). Peak memory is the allocator's peak during one forward+backward minus what
was allocated before it (inputs, weights and dout excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from checkouts import commit_of  # noqa: E402  (benchmarks/checkouts.py, beside this script)

H100_DENSE_BF16_TFLOPS = 989.0  # H100 SXM dense bf16 peak (no sparsity)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    p.add_argument("--tokens", type=int, default=32768, help="token budget per batch")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=64, help="Dqk = Dv")
    p.add_argument("--impls", nargs="+", default=["triton", "triton_exact_rab", "triton_norab", "reference", "sdpa_flash"])
    p.add_argument("--rep-ms", type=int, default=100, help="do_bench timing budget per measurement")
    p.add_argument("--no-kernel-times", action="store_true",
                   help="skip the per-kernel GPU times of the Triton rows (torch.profiler, 5 fwd+bwd)")
    p.add_argument("--out", type=Path, default=None, help="default benchmarks/results/attention-<device>.json")
    p.add_argument("--interpret-smoke", action="store_true", help="one tiny case on CPU under TRITON_INTERPRET=1")
    p.add_argument("--census", action="store_true",
                   help="on CPU, no kernels: how the benchmark's inputs split into tile kinds (`tile_census`)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another checkout whose Triton kernels (impl triton, as triton@baseline) are measured "
                        "beside these, length by length, in a fresh process each")
    p.add_argument("--code", type=Path, default=None, help=argparse.SUPPRESS)  # internal: a --baseline worker
    return p.parse_args()


def draw_lengths(max_len: int, token_budget: int, seed: int) -> list[int]:
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths: list[int] = []
    while not lengths or sum(lengths) < token_budget:
        lengths.append(int(torch.randint(max(1, max_len // 4), max_len + 1, (1,), generator=g)))
    return lengths


def causal_flops(lengths: list[int], heads: int, dqk: int, dv: int) -> int:
    return sum(n * (n + 1) // 2 for n in lengths) * 2 * heads * (dqk + dv)


def make_inputs(lengths: list[int], max_len: int, heads: int, dim: int, device: str, dtype: Any) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    total = sum(lengths)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64)
    q, k, v, dout = (torch.randn(total, heads, dim, generator=g).to(device, dtype) for _ in range(4))
    # Chronological events as sessions look: a fifth of the steps in the same second, most under
    # two minutes, one in twenty a pause of up to ~1e6 s (log-uniform). Every step a long pause
    # (as this benchmark drew before) would make every far tile span many time buckets, the fast
    # path's worst case; `far_tile_share` reports how these inputs split.
    steps = torch.randint(0, 120, (total,), generator=g) * (torch.rand(total, generator=g) > 0.2)
    pauses = torch.rand(total, generator=g) < 0.05
    steps = torch.where(pauses, torch.exp(torch.rand(total, generator=g) * 14).long(), steps)
    ts = (1_600_000_000 + steps.cumsum(0)).to(device)
    pos_w = (0.02 * torch.randn(2 * max_len - 1, generator=g)).to(device)
    ts_w = (0.02 * torch.randn(129, generator=g)).to(device)
    return dict(q=q, k=k, v=v, dout=dout, offsets=offsets.to(device), ts=ts, pos_w=pos_w, ts_w=ts_w)


def build_fns(impl: str, x: dict[str, Any], lengths: list[int], max_len: int) -> tuple[Callable, Callable, list]:
    """(forward, forward+backward, tensors whose .grad to reset) for one implementation."""
    import torch

    from kernels.hstu_attention.reference import hstu_attention_reference, hstu_attention_reference_backward
    from kernels.hstu_attention.triton_bwd import hstu_attention_bwd_triton
    from kernels.hstu_attention.triton_fwd import hstu_attention_fwd_triton

    alpha = x["q"].shape[-1] ** -0.5
    rab = dict(timestamps=x["ts"], pos_weights=x["pos_w"], ts_weights=x["ts_w"])
    if impl == "triton_norab":
        rab = dict(timestamps=None, pos_weights=None, ts_weights=None)
    args = (x["q"], x["k"], x["v"], x["offsets"], max_len)

    if impl in ("triton", "triton_norab", "triton_exact_rab"):
        fast = impl != "triton_exact_rab"

        def fwd() -> Any:
            return hstu_attention_fwd_triton(*args, alpha, "max_len", *rab.values(), fast_rab=fast)

        def fwd_bwd() -> Any:
            fwd()
            return hstu_attention_bwd_triton(x["dout"], *args, alpha, "max_len", *rab.values(), fast_rab=fast)

        return fwd, fwd_bwd, []
    if impl == "reference":
        def fwd() -> Any:
            return hstu_attention_reference(*args, alpha=alpha, norm="max_len", **rab)

        def fwd_bwd() -> Any:
            fwd()
            return hstu_attention_reference_backward(x["dout"], *args, alpha=alpha, norm="max_len", **rab)

        return fwd, fwd_bwd, []
    if impl == "sdpa_flash":
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        batch, heads, dim = len(lengths), x["q"].shape[1], x["q"].shape[2]
        n_pad = max(lengths)
        pos = torch.cat([torch.arange(n, device=x["q"].device) for n in lengths])
        seq = torch.repeat_interleave(torch.arange(batch, device=x["q"].device),
                                      torch.tensor(lengths, device=x["q"].device))

        def pad(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros(batch, n_pad, heads, dim)
            out[seq, pos] = t
            return out.transpose(1, 2).contiguous().requires_grad_(True)  # [B, H, N, D]

        qp, kp, vp = pad(x["q"]), pad(x["k"]), pad(x["v"])
        dop = pad(x["dout"]).detach()

        def fwd() -> Any:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad():
                return F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)

        def fwd_bwd() -> Any:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                out = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)
            out.backward(dop)

        return fwd, fwd_bwd, [qp, kp, vp]
    raise ValueError(f"unknown impl {impl!r}")


def measure_cuda(fn: Callable, grads: list, rep_ms: int) -> tuple[float, float]:
    """(median ms, peak MiB above the memory allocated before the call)."""
    import torch
    import triton.testing

    fn()  # compile / autotune outside the measurement
    for t in grads:
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    ms = triton.testing.do_bench(fn, warmup=10, rep=rep_ms, grad_to_none=grads or None, return_mode="median")
    return float(ms), float(peak_mib)


def kernel_times(fn: Callable, calls: int = 5) -> dict[str, float]:
    """Mean GPU ms per call of each kernel `fn` launches (torch.profiler's CUDA activity), largest
    first: where a forward+backward spends its time, the bias tables' own kernels included."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    times = {e.key[:80]: e.self_device_time_total / calls / 1e3 for e in prof.key_averages()
             if e.self_device_time_total > 0}
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def measure_cpu(fn: Callable, grads: list, rep_ms: int) -> tuple[float, float]:
    fn()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3, float("nan")


def far_tile_share(x: dict[str, Any], block_q: int = 128, block_k: int = 64) -> dict[str, float]:
    """Of the forward's far tiles (its first tuned config's tiling), the share spanning 0, 1-2,
    3-4 and more time-bucket edges: the last take the fast path's loop over edges."""
    from kernels.hstu_attention.rab_tables import edge_table, far_tile_edge_counts

    offsets, ts = x["offsets"].cpu(), x["ts"].cpu()
    request = ts[(offsets[1:] - 1).clamp(min=0)]
    edges = edge_table(ts, request, offsets, x["ts_w"].numel() - 1)
    if edges is None:
        return {}
    spans = far_tile_edge_counts(edges, offsets, block_q, block_k)
    total = max(int(spans.numel()), 1)
    return {"0": int((spans == 0).sum()) / total, "1-2": int(((spans >= 1) & (spans <= 2)).sum()) / total,
            "3-4": int(((spans >= 3) & (spans <= 4)).sum()) / total, ">4": int((spans > 4).sum()) / total}


def diagonal_tile_edges(x: dict[str, Any], block_q: int = 128, block_k: int = 64) -> float | None:
    """Time-bucket edges a tile crossing the diagonal spans, on average over the forward's (its
    first tuned config's tiling): what the band of `rab_tables.diagonal_bias` spares a loop over."""
    from kernels.hstu_attention.rab_tables import diagonal_tile_edge_counts, edge_table

    offsets, ts = x["offsets"].cpu(), x["ts"].cpu()
    request = ts[(offsets[1:] - 1).clamp(min=0)]
    edges = edge_table(ts, request, offsets, x["ts_w"].numel() - 1)
    if edges is None:
        return None
    counts = diagonal_tile_edge_counts(edges, offsets, block_q, block_k)
    return round(float(counts.float().mean()), 1) if counts.numel() else 0.0


def tile_census(x: dict[str, Any], block_q: int = 128, block_k: int = 64) -> dict[str, int]:
    """How the forward's tiles (its first tuned config's tiling) split on these inputs: diagonal
    and far tiles; far tiles spanning more than the unrolled edges, those whose pairs all lie
    within the band (redone from it) and their edges; and for the others, the edge loop's
    applications when runs of edges passing the same pairs of the tile merge (rows clamped to the
    tile, as `triton_common.edge_row_in_tile`) against merging only edges equal on every row."""
    from kernels.hstu_attention.rab_tables import FAR_TILE_MAX_EDGES, edge_table
    from kernels.hstu_attention.triton_common import BAND_WIDTH

    offsets, ts = x["offsets"].cpu(), x["ts"].cpu()
    edges = edge_table(ts, ts[(offsets[1:] - 1).clamp(min=0)], offsets, x["ts_w"].numel() - 1)
    census = dict.fromkeys(["diagonal_tiles", "far_tiles", "many_edge_tiles", "many_edge_tiles_in_band",
                            "many_edge_edges", "many_edge_edges_in_band", "loop_runs_on_tile_rows",
                            "loop_runs_on_whole_rows"], 0)
    if edges is None:
        return census
    for b in range(offsets.numel() - 1):
        start, n = int(offsets[b]), int(offsets[b + 1] - offsets[b])
        for m0 in range(0, n, block_q):
            last = min(m0 + block_q, n) - 1
            rows = edges[:, start + m0: start + last + 1]
            census["diagonal_tiles"] += len(range((m0 // block_k) * block_k, last + 1, block_k))
            for n0 in range(0, (m0 // block_k) * block_k, block_k):
                census["far_tiles"] += 1
                lo, hi = int((rows[:, 0] >= n0 + block_k - 1).sum()), int((rows[:, -1] >= n0).sum())
                if hi - lo <= FAR_TILE_MAX_EDGES:
                    continue
                in_band = last - n0 < BAND_WIDTH.value
                census["many_edge_tiles"] += 1
                census["many_edge_tiles_in_band"] += in_band
                census["many_edge_edges"] += hi - lo
                census["many_edge_edges_in_band"] += (hi - lo) * in_band
                if not in_band:
                    runs = rows[lo:hi]
                    clamped = runs.clamp(n0 - 1, n0 + block_k - 1)
                    census["loop_runs_on_whole_rows"] += hi - lo - int((runs[:-1] == runs[1:]).all(1).sum())
                    census["loop_runs_on_tile_rows"] += hi - lo - int((clamped[:-1] == clamped[1:]).all(1).sum())
    return census


def run_census(args: argparse.Namespace) -> int:
    import torch

    for n in args.lengths:
        x = make_inputs(draw_lengths(n, args.tokens, seed=n), n, 1, 16, "cpu", torch.float32)
        print(f"N={n}: diagonal tiles span {diagonal_tile_edges(x)} edges on average; {tile_census(x)}", flush=True)
    return 0


def run_case(impl: str, max_len: int, args: argparse.Namespace, device: str, measure: Callable) -> dict[str, Any]:
    import torch

    lengths = draw_lengths(max_len, args.tokens, seed=max_len)
    row: dict[str, Any] = dict(impl=impl, max_len=max_len, batch=len(lengths), tokens=sum(lengths),
                               heads=args.heads, dim=args.dim)
    flops = causal_flops(lengths, args.heads, args.dim, args.dim)
    x = make_inputs(lengths, max_len, args.heads, args.dim, device, torch.bfloat16 if device == "cuda" else torch.float32)
    if impl == "triton":
        row["far_tile_share"] = far_tile_share(x)
        row["diagonal_tile_edges"] = diagonal_tile_edges(x)
    try:
        fwd, fwd_bwd, grads = build_fns(impl, x, lengths, max_len)
        row["fwd_ms"], _ = measure(fwd, grads, args.rep_ms)
        row["fwd_bwd_ms"], row["peak_mib"] = measure(fwd_bwd, grads, args.rep_ms)
        row["fwd_tflops"] = flops / row["fwd_ms"] / 1e9
        row["fwd_bwd_tflops"] = 3 * flops / row["fwd_bwd_ms"] / 1e9
        if device == "cuda" and impl.startswith("triton") and not args.no_kernel_times:
            row["fwd_bwd_kernel_ms"] = kernel_times(fwd_bwd)
    except torch.cuda.OutOfMemoryError:
        row["status"] = "oom"
    except RuntimeError as e:  # e.g. no flash kernel for this device or shape
        row["status"] = f"error: {str(e).splitlines()[0][:200]}"
    else:
        row["status"] = "ok"
    del x
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'N':>5} {'B':>4} {'impl':<16} {'fwd ms':>9} {'fwd TF/s':>9} {'f+b ms':>9} {'f+b TF/s':>9} {'peak MiB':>9}  status"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['max_len']:>5} {fmt(r.get('batch'), '4d'):>4} {r['impl']:<16} {fmt(r.get('fwd_ms'), '9.3f')} "
              f"{fmt(r.get('fwd_tflops'), '9.1f')} {fmt(r.get('fwd_bwd_ms'), '9.3f')} "
              f"{fmt(r.get('fwd_bwd_tflops'), '9.1f')} {fmt(r.get('peak_mib'), '9.1f')}  {r['status']}")


def target_checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The project's H100 targets, evaluated for both Triton variants where the rows exist."""
    def get(impl: str, n: int) -> dict[str, Any] | None:
        return next((r for r in rows if r["impl"] == impl and r["max_len"] == n and r["status"] == "ok"), None)

    checks = []
    for impl in ("triton", "triton_norab"):
        t4, ref4, sdpa4, t8 = get(impl, 4096), get("reference", 4096), get("sdpa_flash", 4096), get(impl, 8192)
        if t4 and ref4:
            ratio = ref4["fwd_bwd_ms"] / t4["fwd_bwd_ms"]
            checks.append(dict(impl=impl, target="4096 fwd+bwd >= 5x faster than padded reference", value=ratio, ok=ratio >= 5))
            mem = t4["peak_mib"] / ref4["peak_mib"]
            checks.append(dict(impl=impl, target="4096 peak memory <= 1/4 of padded reference", value=mem, ok=mem <= 0.25))
        if t4 and sdpa4:
            ratio = sdpa4["fwd_bwd_ms"] / t4["fwd_bwd_ms"]
            checks.append(dict(impl=impl, target="4096 fwd+bwd >= 2x faster than SDPA flash", value=ratio, ok=ratio >= 2))
        if t8:
            frac = t8["fwd_bwd_tflops"] / H100_DENSE_BF16_TFLOPS
            checks.append(dict(impl=impl, target="8192 fwd+bwd >= 40% of 989 TFLOP/s (causal-exact)", value=frac, ok=frac >= 0.4))
    return checks


def tuned_configs() -> dict[str, dict[str, str]]:
    """The autotuner's choice per kernel and tuning key, for the record."""
    from kernels.hstu_attention import triton_bwd, triton_fwd, triton_rab_grad

    tuned = {"fwd": triton_fwd._hstu_fwd_tuned, "dkdv": triton_bwd._dkdv_tuned, "dq": triton_bwd._dq_tuned,
             "rab_grad": triton_rab_grad._rab_grad_tuned}
    return {name: {str(key): str(cfg) for key, cfg in t.cache.items()} for name, t in tuned.items()}


def report(row: dict[str, Any], seconds: float) -> None:
    """One progress line per measured row, its far-tile split and kernel times under it."""
    print(f"[{seconds:6.1f}s] N={row['max_len']} {row['impl']}: {row['status']} "
          f"fwd {fmt(row.get('fwd_ms'), '.3f')} ms, fwd+bwd {fmt(row.get('fwd_bwd_ms'), '.3f')} ms, "
          f"peak {fmt(row.get('peak_mib'), '.0f')} MiB", flush=True)
    if row.get("far_tile_share"):
        print(f"    far tiles by edges spanned: {row['far_tile_share']}; diagonal tiles span "
              f"{row.get('diagonal_tile_edges')} edges on average", flush=True)
    if row.get("fwd_bwd_kernel_ms"):
        print("    " + ", ".join(f"{k} {v:.3f}" for k, v in list(row["fwd_bwd_kernel_ms"].items())[:8]), flush=True)


def baseline_rows(args: argparse.Namespace, max_len: int) -> list[dict[str, Any]]:
    """The `triton` row of another checkout at one length, measured by this script in a fresh
    process that imports that checkout's kernels (`--code`); impl `triton@baseline`."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--code", str(args.baseline.resolve()), "--impls", "triton",
           "--lengths", str(max_len), "--tokens", str(args.tokens), "--heads", str(args.heads), "--dim",
           str(args.dim), "--rep-ms", str(args.rep_ms)]
    cmd += ["--interpret-smoke"] * args.interpret_smoke + ["--no-kernel-times"] * args.no_kernel_times
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=args.baseline)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no output"]
        return [dict(impl="triton@baseline", max_len=max_len, status=f"error: {lines[-1][:200]}")]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    return [r | {"impl": "triton@baseline"} for r in rows]


def baseline_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per length, the baseline's fwd+bwd time over this checkout's (both measured in this run)."""
    out = []
    for r in rows:
        if r["impl"] != "triton@baseline" or r["status"] != "ok":
            continue
        this = next((t for t in rows if t["impl"] == "triton" and t["max_len"] == r["max_len"] and t["status"] == "ok"),
                    None)
        if this is not None:
            out.append(dict(max_len=r["max_len"], this_ms=this["fwd_bwd_ms"], baseline_ms=r["fwd_bwd_ms"],
                            speedup=r["fwd_bwd_ms"] / this["fwd_bwd_ms"]))
    return out


def main() -> int:
    args = parse_args()
    if args.census:
        return run_census(args)
    if args.code is not None:  # a --baseline worker: that checkout's kernels, rows as JSON
        sys.path.insert(0, str(args.code.resolve()))
    if args.interpret_smoke:
        # Must precede the first triton import (the kernels are decorated for the interpreter).
        os.environ["TRITON_INTERPRET"] = "1"
        args.lengths, args.tokens, args.heads, args.dim = [48], 64, 2, 16
        if args.code is None:
            args.impls = ["triton", "triton_exact_rab", "triton_norab", "reference"]
        device, measure = "cpu", measure_cpu
    else:
        import torch

        if not torch.cuda.is_available():
            print("benchmarks/attention.py needs a CUDA device; nothing measured. "
                  "(--interpret-smoke checks the script on CPU.)")
            return 0
        device, measure = "cuda", measure_cuda
    if args.code is not None:
        import kernels

        rows = [run_case(impl, n, args, device, measure) for n in args.lengths for impl in args.impls]
        checkout = str(Path(kernels.__file__).resolve().parents[1])  # where the measured kernels came from
        print(json.dumps([r | {"checkout": checkout} for r in rows]))
        return 0

    started = time.perf_counter()
    rows = []
    for n in args.lengths:
        for impl in args.impls:
            rows.append(run_case(impl, n, args, device, measure))
            report(rows[-1], time.perf_counter() - started)
        if args.baseline is not None:  # alternating with this checkout, length by length
            for row in baseline_rows(args, n):
                rows.append(row)
                report(row, time.perf_counter() - started)
    speedups = baseline_speedups(rows)
    if args.interpret_smoke:
        print_table(rows)
        for sp in speedups:
            print(f"N={sp['max_len']}: baseline {sp['baseline_ms']:.1f} ms / this {sp['this_ms']:.1f} ms "
                  f"(interpreted: says nothing of GPU speed)")
        return 0 if all(r["status"] == "ok" for r in rows) else 1

    import torch
    import triton

    device_name = torch.cuda.get_device_name()
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    out_path = args.out or ROOT / "benchmarks" / "results" / f"attention-{slug}.json"
    print_table(rows)
    for name, chosen in tuned_configs().items():
        for key, cfg in chosen.items():
            print(f"tuned {name} {key}: {cfg}")
    checks = target_checks(rows)
    for c in checks:
        print(f"{'PASS' if c['ok'] else 'MISS'} {c['impl']:<13} {c['target']}: {c['value']:.3g}")
    for sp in speedups:
        print(f"N={sp['max_len']}: triton fwd+bwd {sp['speedup']:.2f}x the baseline's speed "
              f"({sp['baseline_ms']:.3f} ms -> {sp['this_ms']:.3f} ms, same run)")
    result = dict(
        device=device_name, torch=torch.__version__, triton=triton.__version__, python=platform.python_version(),
        commit=commit_of(ROOT),
        settings=dict(lengths=args.lengths, tokens=args.tokens, heads=args.heads, dim=args.dim, dtype="bfloat16",
                      length_distribution="uniform [N/4, N]", norm="max_len", rep_ms=args.rep_ms),
        flops_convention="causal-exact: sum n(n+1)/2 * 2 * H * (Dqk + Dv); fwd+bwd = 3x fwd",
        rows=rows, targets=checks, tuned_configs=tuned_configs(), wall_s=time.perf_counter() - started,
    )
    if args.baseline is not None:
        result["baseline"] = dict(path=str(args.baseline), commit=commit_of(args.baseline), speedups=speedups)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
