"""HSTU vs SASRec on MovieLens-100K: same budget, several seeds, test metrics at the best epoch.

    python benchmarks/ml100k.py                       # 3 seeds each, 2 processes, ~25 min on 2 cores
    python benchmarks/ml100k.py --data PATH/u.data --seeds 0 --epochs 2   # a quick smoke run

The defaults are configs/ml-100k-{hstu,sasrec}.toml (ML-1M's published shape with max length 100
and dropout 0.5; see the comment there). Both models get the same budget: embedding dim, blocks,
heads, max length, dropout, epochs,
batch size, negatives, learning rate, evaluation schedule and task; each run trains retrieval and
ranking jointly (`train.task = "both"`), is selected on validation NDCG@10 and reports test
HR@10/50, NDCG@10/50, MRR and NE (ranking: action = rating >= 4) at that epoch. Runs use one
torch thread each and run `--jobs` at a time in separate processes. Writes
benchmarks/results/ml100k.json (every run, mean and sample std per model, the configs, the
machine) and prints a markdown table. The data file is read in place and never copied.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402

DEFAULT_DATA = Path("/work/shared/data/ml-100k/u.data")
METRICS = ("hr@10", "hr@50", "ndcg@10", "ndcg@50", "mrr", "ne")
FAMILIES = ("hstu", "sasrec")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MovieLens-100K u.data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--embedding-dim", type=int, default=50)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--max-seq-len", type=int, default=100)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--negatives", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--task", choices=["retrieval", "both"], default="both")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ml100k.json")
    return p.parse_args(argv)


def run_configs(args: argparse.Namespace) -> list[RunConfig]:
    """One config per (family, seed); the families differ in `model.family` only."""
    data = DataConfig(source="ml-100k", path=str(args.data))
    configs = []
    for seed in args.seeds:
        for family in FAMILIES:
            model = ModelConfig(
                family=family, embedding_dim=args.embedding_dim, num_blocks=args.blocks, num_heads=args.heads,
                max_seq_len=args.max_seq_len, dropout=args.dropout,
            )
            train = TrainConfig(
                task=args.task, epochs=args.epochs, batch_size=args.batch_size, num_negatives=args.negatives,
                lr=args.lr, eval_every=args.eval_every, eval_batch_size=128, seed=seed, num_threads=1,
            )
            configs.append(RunConfig(data=data, model=model, train=train))
    return configs


def one_run(config: RunConfig) -> dict[str, Any]:
    """Train one config (in a worker process) and return what the JSON keeps of it."""
    from gr_core.lengths import dataset_num_items
    from gr_core.trainer import train_run
    from scaling import count_params, run_flops

    result = train_run(config)
    flops = run_flops(config.data, config.model, config.train)
    return {
        "family": config.model.family,
        "seed": config.train.seed,
        "run_id": config.run_id,
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "wall_time_s": result.wall_time_s,
        "train_flops": flops.train,
        "eval_flops": flops.eval_total,
        "params": count_params(config.model, dataset_num_items(config.data), task=config.train.task).to_dict(),
        "history": result.history,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per family and metric (plus wall time and FLOPs): mean and sample std over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for family in FAMILIES:
        rows = [r for r in runs if r["family"] == family]
        values = {m: [r["metrics"][m] for r in rows if m in r["metrics"]] for m in METRICS}
        values["wall_time_s"] = [r["wall_time_s"] for r in rows]
        values["train_flops"] = [r["train_flops"] for r in rows]
        out[family] = {
            name: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
            for name, v in values.items() if v
        }
    return out


def markdown_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    cols = [m for m in METRICS if m in summary["hstu"]] + ["wall_time_s", "train_flops"]
    header = "| model | " + " | ".join(c.replace("_s", " (s)").replace("train_flops", "train FLOPs") for c in cols) + " |"
    lines = [header, "|" + "---|" * (len(cols) + 1)]
    for family in FAMILIES:
        cells = []
        for c in cols:
            s = summary[family][c]
            if c == "train_flops":
                cells.append(f"{s['mean']:.3e}")
            elif c == "wall_time_s":
                cells.append(f"{s['mean']:.0f} ± {s['std']:.0f}")
            else:
                cells.append(f"{s['mean']:.4f} ± {s['std']:.4f}")
        lines.append(f"| {family.upper() if family == 'hstu' else 'SASRec'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"--data {args.data}: not a file (MovieLens-100K u.data)")
    configs = run_configs(args)
    start = time.perf_counter()
    # HSTU runs first: they are the longer ones, so the pool's tail is short.
    configs.sort(key=lambda c: c.model.family != "hstu")
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs, maxtasksperchild=1) as pool:
        runs = []
        for run in pool.imap_unordered(one_run, configs):
            m = run["metrics"]
            print(f"{run['family']} seed {run['seed']}: test hr@10 {m['hr@10']:.4f} ndcg@10 {m['ndcg@10']:.4f} "
                  f"(epoch {run['best_epoch']}), {run['wall_time_s']:.0f} s", flush=True)
            runs.append(run)
    total = time.perf_counter() - start
    runs.sort(key=lambda r: (r["family"], r["seed"]))
    summary = summarize(runs)
    hstu, sasrec = summary["hstu"], summary["sasrec"]
    acceptance = {
        m: hstu[m]["mean"] > sasrec[m]["mean"] for m in ("hr@10", "ndcg@10")
    }
    out = {
        "benchmark": "ml100k: HSTU vs SASRec, same budget",
        "data": {"source": "ml-100k", "file": args.data.name},
        "budget": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
        "configs": {c.model.family: c.to_dict() for c in configs if c.train.seed == args.seeds[0]},
        "runs": runs,
        "summary": summary,
        "hstu_beats_sasrec": acceptance,
        "table": markdown_table(summary),
        "total_wall_time_s": total,
        "machine": {
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "jobs": args.jobs, "torch_threads_per_run": 1,
        },
    }
    for config in out["configs"].values():
        config["data"]["path"] = args.data.name  # no machine paths in the results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print()
    print(out["table"])
    print(f"\nHSTU beats SASRec on mean test hr@10: {acceptance['hr@10']}, ndcg@10: {acceptance['ndcg@10']}; "
          f"total wall time {total / 60:.1f} min; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
