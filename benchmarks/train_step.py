"""Training throughput of one run: tokens/s, achieved FLOP/s, MFU and the bounds, optionally beside another checkout.

    python benchmarks/train_step.py                                   # this checkout
    python benchmarks/train_step.py --baseline /path/to/old/checkout --repeats 3
    python benchmarks/train_step.py --sizes ml100k --families hstu --profile

Each (size, family, checkout, repeat) is a fresh process with that checkout's code first on
sys.path: it builds the run's `Trainer` as a sweep worker would, trains one epoch to warm up,
then times `--epochs` more with `Trainer.train_epoch` (the trainer's own loop: batching, negative
sampling, forward, backward, optimizer). With `--baseline` the checkouts alternate, so both see
the same machine (this one is noisy: compare the ratios, not absolute times). Sizes:

    ml100k   MovieLens-100K's published shape (D 50, 2 blocks, 1 head, max length 100, batch 128,
             128 negatives, retrieval + ranking), on the real file when found, else synthetic
             data of its size (the JSON says which)
    demo     a mid-sized run of `make demo` (2,000 synthetic users, width 64, max length 50, 64
             negatives)

Numbers, per epoch and per thread (`--threads`, 1 by default: per core used):

    tokens/s        training tokens / seconds of `train_epoch`
    FLOP/s, MFU     the run's training FLOPs by the project's convention (`scaling.run_flops`,
                    DESIGN.md section 3; the same for both checkouts) / seconds, and over the
                    measured matmul peak (CPU: float32 at the thread count; GPU: its dense peak)
    bounds          tokens/s if only the matmul FLOPs ran, at that peak; and if only the memory
                    traffic of gathering each position's R+1 candidate vectors ran (read and write
                    of [T, R+1, D] floats forward, the same scattered back), at the measured copy
                    bandwidth (what the gathered scoring costs; a run that scores its candidates
                    densely, `gr_core.losses`, does not pay it). The lower of the two is "bound".
                    On a GPU: its copy bandwidth and bf16 elements.

`--profile` adds the top operators of one epoch by self time (torch.profiler) for this checkout.
Runs unchanged on a GPU (the runs train on it, bf16). Writes benchmarks/results/train_step.json
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from checkouts import commit_of  # benchmarks/checkouts.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
SIZES = ("ml100k", "demo")
FAMILIES = ("hstu", "sasrec", "fuxi")
FLOAT_BYTES = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, help="another checkout, measured alternately with this one")
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per (size, family, checkout)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per process, after one warm-up epoch")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MovieLens-100K u.data (synthetic if missing)")
    p.add_argument("--profile", action="store_true", help="top operators of one epoch, this checkout")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_step.json")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: measure with this checkout
    p.add_argument("--job", help=argparse.SUPPRESS)  # internal: the worker's (size, family) as JSON
    args = p.parse_args(argv)
    for name in ("repeats", "epochs", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


def run_config(size: str, family: str, *, data_path: Path, threads: int, device: str) -> Any:
    """The RunConfig of a benchmark size (gr_core of the checkout on sys.path)."""
    from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    precision = "bf16" if device == "cuda" else "fp32"
    if size == "ml100k":
        data = (DataConfig(source="ml-100k", path=str(data_path)) if data_path.is_file()
                else DataConfig(num_users=943, num_items=1682, min_events=20, max_events=200))
        model = ModelConfig(family=family, embedding_dim=50, num_blocks=2, num_heads=1, max_seq_len=100, dropout=0.5)
        train = TrainConfig(task="both", epochs=100, batch_size=128, num_negatives=128, lr=1e-3, seed=0,
                            num_threads=threads, device=device, precision=precision)
    else:
        data = DataConfig(num_users=2000, num_items=1000, num_clusters=20, min_events=8, max_events=60, seed=0)
        model = ModelConfig(family=family, embedding_dim=64, num_blocks=2, max_seq_len=50, dropout=0.2)
        train = TrainConfig(epochs=5, batch_size=128, num_negatives=64, seed=0, num_threads=threads, device=device,
                            precision=precision)
    return RunConfig(data=data, model=model, train=train)


def measure_in_this_process(job: dict[str, Any]) -> dict[str, Any]:
    """Warm up one epoch, then time `epochs` more of the run's own trainer (the worker's side)."""
    from gr_core.devices import describe
    from gr_core.trainer import Trainer

    config = run_config(job["size"], job["family"], data_path=Path(job["data"]), threads=job["threads"],
                        device=job["device"])
    trainer = Trainer(config)
    trainer.train_epoch()
    tokens_before = trainer.progress.train_tokens
    _sync(trainer.device)
    started = time.perf_counter()
    for _ in range(job["epochs"]):
        trainer.train_epoch()
    _sync(trainer.device)
    seconds = time.perf_counter() - started
    out = {"seconds": seconds, "tokens": trainer.progress.train_tokens - tokens_before, "epochs": job["epochs"],
           "data_source": config.data.source, "device": describe(trainer.device)}
    if job.get("profile"):
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            trainer.train_epoch()
        total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1.0
        top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        out["profile"] = [{"op": e.key, "self_cpu_share": e.self_cpu_time_total / total, "calls": e.count}
                          for e in top]
    return out


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(checkout: Path, job: dict[str, Any]) -> dict[str, Any]:
    """One fresh process of `checkout` measuring `job`; its result."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(checkout), "--job", json.dumps(job)],
        capture_output=True, text=True, env=env, cwd=checkout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {job} with {checkout} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def copy_bandwidth(device: str, threads: int, megabytes: int = 256) -> float:
    """Bytes/s of a large float32 copy (read + write) on `device` (the CPU at `threads` threads), best of 5."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(megabytes * 2**20 // FLOAT_BYTES, device=device)
    dst = torch.empty_like(src)

    def copy() -> float:
        started = time.perf_counter()
        dst.copy_(src)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    copy()
    return 2 * src.numel() * FLOAT_BYTES / min(copy() for _ in range(5))


def derived(size: str, family: str, result: dict[str, Any], args: argparse.Namespace, peak: float,
            bandwidth: float) -> dict[str, Any]:
    """FLOP/s, MFU and bounds of one measurement, by this checkout's FLOP convention."""
    from scaling import run_flops

    config = run_config(size, family, data_path=args.data, threads=args.threads, device="cpu")
    flops_per_epoch = run_flops(config.data, config.model, config.train).train / config.train.epochs
    tokens_per_epoch = result["tokens"] / result["epochs"]
    flops_per_token = flops_per_epoch / tokens_per_epoch
    tokens_per_s = result["tokens"] / result["seconds"]
    element_bytes = 2 if result["device"].startswith("cuda") else FLOAT_BYTES  # bf16 on a GPU
    gather_bytes_per_token = 4 * (config.train.num_negatives + 1) * config.model.embedding_dim * element_bytes
    matmul_bound, gather_bound = peak / flops_per_token, bandwidth / gather_bytes_per_token
    return {
        "tokens_per_s": tokens_per_s,
        "flops_per_s": tokens_per_s * flops_per_token,
        "mfu": tokens_per_s * flops_per_token / peak,
        "bound_matmul_tokens_per_s": matmul_bound,
        "bound_gather_tokens_per_s": gather_bound,
        "bound_tokens_per_s": min(matmul_bound, gather_bound),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:  # the measuring side: the checkout's code first on sys.path
        sys.path.insert(0, str(args.worker.resolve()))
        print(json.dumps(measure_in_this_process(json.loads(args.job))))
        return 0
    sys.path.insert(0, str(ROOT))
    import torch

    from scaling.measure import run_peak_flops

    device = "cuda" if torch.cuda.is_available() else "cpu"
    checkouts = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    bandwidth = copy_bandwidth(device, args.threads)
    rows: list[dict[str, Any]] = []
    started = time.time()
    for size in args.sizes:
        for family in args.families:
            job = {"size": size, "family": family, "data": str(args.data.resolve()), "threads": args.threads,
                   "device": device, "epochs": args.epochs}
            per_checkout: dict[str, list[dict[str, Any]]] = {name: [] for name in checkouts}
            profile = None
            for repeat in range(args.repeats):
                for name, checkout in checkouts.items():
                    result = measure(checkout, job | {"profile": args.profile and name == "this" and repeat == 0})
                    profile = result.pop("profile", profile)
                    per_checkout[name].append(result)
            measured_on = per_checkout["this"][0]["device"]
            peak, peak_source = run_peak_flops(measured_on, "bf16" if device == "cuda" else "fp32",
                                               threads=args.threads)
            row: dict[str, Any] = {"size": size, "family": family, "data_source": per_checkout["this"][0]["data_source"],
                                   "device": measured_on, "peak_flops_per_s": peak, "peak_source": peak_source}
            for name, results in per_checkout.items():
                best = max(results, key=lambda r: r["tokens"] / r["seconds"])
                row[name] = derived(size, family, best, args, peak, bandwidth) | {
                    "tokens_per_s_each": [r["tokens"] / r["seconds"] for r in results]}
            if "baseline" in row:
                row["speedup"] = row["this"]["tokens_per_s"] / row["baseline"]["tokens_per_s"]
            if profile is not None:
                row["profile"] = profile
            rows.append(row)
            _print_row(row)
    out = {
        "command": "python " + shlex.join([str(Path(__file__).relative_to(ROOT)), *(argv if argv is not None
                                                                                   else sys.argv[1:])]),
        "commits": {name: commit_of(path) for name, path in checkouts.items()},
        "threads": args.threads,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "rows": rows,
        "wall_time_s": time.time() - started,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "device": device,
                    "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None},
        "note": "best of --repeats fresh processes per checkout; FLOPs by the project's convention for both",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s at {args.threads} thread(s); wrote {args.out}")
    return 0


def _print_row(row: dict[str, Any]) -> None:
    this = row["this"]
    line = (f"{row['size']:7s} {row['family']:7s} {this['tokens_per_s']:9.0f} tokens/s  "
            f"{this['flops_per_s'] / 1e9:6.2f} GFLOP/s  MFU {this['mfu']:6.1%}  "
            f"bound {this['bound_tokens_per_s']:9.0f} tokens/s (matmul {this['bound_matmul_tokens_per_s']:.0f}, "
            f"gather {this['bound_gather_tokens_per_s']:.0f})")
    if "baseline" in row:
        line += f"  baseline {row['baseline']['tokens_per_s']:9.0f} tokens/s  speedup {row['speedup']:.2f}x"
    print(line, flush=True)
    for op in row.get("profile", [])[:8]:
        print(f"    {op['self_cpu_share']:6.1%}  {op['op']} ({op['calls']} calls)")


if __name__ == "__main__":
    sys.exit(main())
