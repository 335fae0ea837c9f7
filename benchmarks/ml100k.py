"""HSTU, SASRec and FuXi-alpha on MovieLens-100K: settings chosen on validation only, 5 seeds, paired test differences.

    python benchmarks/ml100k.py                     # the full protocol, 24 runs: ~1.5-2 h on 2 cores (resumable)
    python benchmarks/ml100k.py --seeds 0 1 --epochs 2 --lrs 1e-3 --dropouts 0.5   # a quick smoke run

Protocol (the shape is ML-1M's published one with max length 100: D 50, 2 blocks, 1 head, batch
128, 128 negatives, retrieval and ranking trained jointly, `train.task = "both"`):

1. Search, validation only. For each model, every (learning rate, dropout) of `--lrs` x
   `--dropouts` trains with seed `--seeds[0]`, up to `--epochs` epochs with early stopping
   (`--patience` epochs without a better validation NDCG@10, evaluated every `--eval-every`); the
   setting with the best validation NDCG@10 (at its selected epoch) is kept. The trainer tests
   each run once training ends (on its best validation epoch's weights); the search never reads
   those test metrics before the choice is made.
2. Comparison. The chosen setting of each model trains with every seed of `--seeds` (the search
   run is reused for the first); each run reports its test metrics at its best validation epoch.
3. Statistics. For hr@10, hr@50, ndcg@10, ndcg@50, mrr and NE, two planned differences,
   HSTU - SASRec and FuXi-alpha - HSTU, each with a 95% interval from
   `analysis.paired.paired_difference`: a paired bootstrap over the test users of the
   seed-averaged per-user values, plus the seed-to-seed variance (coverage checked by simulation
   in tests/unit/test_analysis_paired.py). Significant = the interval excludes 0. The intervals
   are per comparison and per metric (not simultaneous over the 12). Higher is better except NE.

Runs use one torch thread each and run `--jobs` at a time in separate processes. Each finished
run is kept in `--runs-cache` (.cache/ml100k-runs by default), so an interrupted benchmark picks
up where it stopped; the wall time reported covers the last invocation only. Writes
benchmarks/results/ml100k.json (the search, every run, means and sample SDs, the paired
differences, the machine, the command and wall time) and prints markdown tables. The data file is
read in place and never copied.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.paired import PairedDifference, binary_cross_entropy, paired_difference, rank_metrics  # noqa: E402
from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
METRICS = ("hr@10", "hr@50", "ndcg@10", "ndcg@50", "mrr", "ne")
FAMILIES = ("hstu", "sasrec", "fuxi")
LABELS = {"hstu": "HSTU", "sasrec": "SASRec", "fuxi": "FuXi-alpha"}
# The planned comparisons, (a, b) read as a - b: the published claims each paper makes.
COMPARISONS = (("hstu", "sasrec"), ("fuxi", "hstu"))
SELECTION = "ndcg@10"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MovieLens-100K u.data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3], help="learning rates searched")
    p.add_argument("--dropouts", type=float, nargs="+", default=[0.2, 0.5], help="dropouts searched")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--patience", type=int, default=10, help="epochs without a better validation ndcg@10")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--embedding-dim", type=int, default=50)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--max-seq-len", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--negatives", type=int, default=128)
    p.add_argument("--bootstrap", type=int, default=4000, help="bootstrap replicates of each difference")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ml100k.json")
    p.add_argument("--runs-cache", type=Path, default=ROOT / ".cache" / "ml100k-runs",
                   help="finished runs are kept here (one JSON per run id) so an interrupted benchmark resumes; "
                        "a run whose config changed has a new id and trains again")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace, family: str, lr: float, dropout: float, seed: int) -> RunConfig:
    """One run; the families differ in `model.family` only (each with its default options), and share every other setting."""
    return RunConfig(
        data=DataConfig(source="ml-100k", path=str(args.data)),
        model=ModelConfig(family=family, embedding_dim=args.embedding_dim, num_blocks=args.blocks,
                          num_heads=args.heads, max_seq_len=args.max_seq_len, dropout=dropout),
        train=TrainConfig(task="both", epochs=args.epochs, batch_size=args.batch_size, num_negatives=args.negatives,
                          lr=lr, eval_every=args.eval_every, patience=args.patience, eval_batch_size=128, seed=seed,
                          num_threads=1, selection_metric=SELECTION),
    )


def one_run(config: RunConfig) -> dict[str, Any]:
    """Train one config (in a worker process); its metrics, compute and per-user test outcomes."""
    from gr_core.lengths import dataset_num_items
    from gr_core.trainer import train_run
    from scaling import count_params, run_flops

    result = train_run(config)
    flops = run_flops(config.data, config.model, config.train)
    per_user = result.test_per_user
    assert np.array_equal(per_user["user_ids"], per_user["ranking_user_ids"]), "retrieval and ranking users differ"
    return {
        "family": config.model.family,
        "lr": config.train.lr,
        "dropout": config.model.dropout,
        "seed": config.train.seed,
        "run_id": config.run_id,
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "wall_time_s": result.wall_time_s,
        "train_flops_planned": flops.train,
        "train_flops_spent": flops.train * result.epochs_run / config.train.epochs,
        "params": count_params(config.model, dataset_num_items(config.data), task=config.train.task).to_dict(),
        "history": result.history,
        "per_user": {k: v.tolist() for k, v in per_user.items()},
    }


def _print_run(run: dict[str, Any], note: str = "") -> None:
    m = run["metrics"]
    print(f"{run['family']} lr {run['lr']:g} dropout {run['dropout']:g} seed {run['seed']}: val {SELECTION} "
          f"{m['val_' + SELECTION]:.4f} (epoch {run['best_epoch']} of {run['epochs_run']}), "
          f"{run['wall_time_s']:.0f} s{note}", flush=True)


def _cached(cache: Path, config: RunConfig) -> dict[str, Any] | None:
    path = cache / f"{config.run_id}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _keep(cache: Path, run: dict[str, Any]) -> None:
    # Written whole then renamed: an interrupt leaves either the finished run or nothing.
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{run['run_id']}.json.tmp"
    tmp.write_text(json.dumps(run))
    tmp.replace(cache / f"{run['run_id']}.json")


def run_all(configs: list[RunConfig], jobs: int, cache: Path) -> list[dict[str, Any]]:
    from scaling import run_flops

    runs = []
    todo = []
    for config in configs:
        run = _cached(cache, config)
        if run is None:
            todo.append(config)
        else:
            _print_run(run, " (finished earlier, from the runs cache)")
            runs.append(run)
    # The most expensive runs first (planned FLOPs), so the pool's tail is short.
    todo.sort(key=lambda c: -run_flops(c.data, c.model, c.train).train)
    if not todo:
        return runs
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, maxtasksperchild=1) as pool:
        for run in pool.imap_unordered(one_run, todo):
            _keep(cache, run)
            _print_run(run)
            runs.append(run)
    return runs


def choose(search: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per family, the (lr, dropout) with the best validation ndcg@10: test values are not read."""
    chosen = {}
    for family in FAMILIES:
        best = max((r for r in search if r["family"] == family), key=lambda r: r["metrics"][f"val_{SELECTION}"])
        chosen[family] = {"lr": best["lr"], "dropout": best["dropout"]}
    return chosen


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per family and metric (plus wall time and spent FLOPs): mean and sample SD over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for family in FAMILIES:
        rows = [r for r in runs if r["family"] == family]
        values = {m: [r["metrics"][m] for r in rows] for m in METRICS}
        values["wall_time_s"] = [r["wall_time_s"] for r in rows]
        values["train_flops_spent"] = [r["train_flops_spent"] for r in rows]
        out[family] = {
            name: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
            for name, v in values.items()
        }
    return out


def per_user_values(runs: list[dict[str, Any]], family: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """[seeds, users] per-user values of each metric (NE: per-user cross-entropy), and the labels."""
    rows = sorted((r for r in runs if r["family"] == family), key=lambda r: r["seed"])
    users = np.asarray(rows[0]["per_user"]["user_ids"])
    labels = np.asarray(rows[0]["per_user"]["label"], dtype=np.float64)
    for r in rows:
        assert np.array_equal(r["per_user"]["user_ids"], users), "runs were evaluated on different users"
    ranks = np.stack([np.asarray(r["per_user"]["rank"]) for r in rows])
    values = rank_metrics(ranks)
    values["ne"] = np.stack([binary_cross_entropy(r["per_user"]["logit"], labels) for r in rows])
    return values, labels


def compare(runs: list[dict[str, Any]], a: str, b: str, n_bootstrap: int) -> dict[str, PairedDifference]:
    """Per metric, family a minus family b over the same test users."""
    values_a, labels = per_user_values(runs, a)
    values_b, labels_b = per_user_values(runs, b)
    assert np.array_equal(labels, labels_b)
    return {
        m: paired_difference(m, values_a[m], values_b[m], labels_U=labels if m == "ne" else None,
                             n_bootstrap=n_bootstrap, seed=i)
        for i, m in enumerate(METRICS)
    }


def comparison_name(a: str, b: str) -> str:
    return f"{LABELS[a]} - {LABELS[b]}"


def tables(summary: dict[str, dict[str, dict[str, float]]], diffs: dict[str, dict[str, PairedDifference]]) -> str:
    head = "| model | " + " | ".join(METRICS) + " | wall time (s) | train FLOPs spent |"
    lines = [head, "|" + "---|" * (len(METRICS) + 3)]
    for family in FAMILIES:
        s = summary[family]
        cells = [f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}" for m in METRICS]
        cells += [f"{s['wall_time_s']['mean']:.0f} ± {s['wall_time_s']['std']:.0f}",
                  f"{s['train_flops_spent']['mean']:.3e}"]
        lines.append(f"| {LABELS[family]} | " + " | ".join(cells) + " |")
    for name, by_metric in diffs.items():
        cells = []
        for m in METRICS:
            d = by_metric[m]
            mark = "**" if d.significant else ""
            cells.append(f"{mark}{d.estimate:+.4f}{mark} [{d.interval[0]:+.4f}, {d.interval[1]:+.4f}]")
        lines.append(f"| {name} (95% CI) | " + " | ".join(cells) + " | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"error: --data {args.data}: not a file (MovieLens-100K u.data); pass --data PATH/u.data")
    start = time.perf_counter()
    grid = list(itertools.product(args.lrs, args.dropouts))
    search_configs = [make_config(args, f, lr, p, args.seeds[0]) for f in FAMILIES for lr, p in grid]
    print(f"search: {len(search_configs)} runs ({len(grid)} settings per model), seed {args.seeds[0]}", flush=True)
    search = run_all(search_configs, args.jobs, args.runs_cache) if len(grid) > 1 else []
    chosen = choose(search) if search else {f: {"lr": args.lrs[0], "dropout": args.dropouts[0]} for f in FAMILIES}
    print(f"chosen on validation {SELECTION}: {chosen}", flush=True)
    reused = [r for r in search if (r["lr"], r["dropout"]) == (chosen[r["family"]]["lr"], chosen[r["family"]]["dropout"])]
    todo = [make_config(args, f, chosen[f]["lr"], chosen[f]["dropout"], s) for f in FAMILIES for s in args.seeds
            if not (search and s == args.seeds[0])]
    runs = reused + run_all(todo, args.jobs, args.runs_cache)
    total = time.perf_counter() - start
    runs.sort(key=lambda r: (r["family"], r["seed"]))
    summary = summarize(runs)
    diffs = {comparison_name(a, b): compare(runs, a, b, args.bootstrap) for a, b in COMPARISONS}
    table = tables(summary, diffs)
    out = {
        "benchmark": "ml100k: HSTU, SASRec and FuXi-alpha, settings chosen on validation, paired per-user test differences",
        "command": "python benchmarks/ml100k.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "data": {"source": "ml-100k", "file": args.data.name},
        "protocol": {
            "search": {"lr": args.lrs, "dropout": args.dropouts, "seed": args.seeds[0],
                       "selected_on": f"validation {SELECTION} at the run's best validation epoch"},
            "seeds": args.seeds, "epochs": args.epochs, "patience": args.patience, "eval_every": args.eval_every,
            "shape": {"embedding_dim": args.embedding_dim, "blocks": args.blocks, "heads": args.heads,
                      "max_seq_len": args.max_seq_len, "batch_size": args.batch_size, "negatives": args.negatives},
            "evaluation": {"split": "leave-one-out (last = test, second-to-last = validation)",
                           "ranking": "full ranking over the rated items (data.candidates = 'rated'); "
                                      "history filter 'full' (train.eval_filter)",
                           "reported": "test metrics at each run's best validation ndcg@10 epoch"},
            "comparison": next(iter(diffs.values()))["ndcg@10"].to_dict()["test"],
            "comparisons": [comparison_name(a, b) for a, b in COMPARISONS],
        },
        "search": [{k: r[k] for k in ("family", "lr", "dropout", "seed", "best_epoch", "epochs_run")}
                   | {"val_ndcg@10": r["metrics"][f"val_{SELECTION}"]} for r in search],
        "chosen": chosen,
        "runs": [{k: v for k, v in r.items() if k != "per_user"} for r in runs],
        "summary": summary,
        "differences": {name: {m: d.to_dict() for m, d in by_metric.items()} for name, by_metric in diffs.items()},
        "table": table,
        "total_wall_time_s": total,
        "sum_of_run_wall_times_s": sum(r["wall_time_s"] for r in runs + [r for r in search if r not in reused]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "jobs": args.jobs, "torch_threads_per_run": 1},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print()
    print(table)
    print()
    for name, by_metric in diffs.items():
        for m, d in by_metric.items():
            better = "lower" if m == "ne" else "higher"
            print(f"  {m} ({better} is better): {name} = {d.estimate:+.4f}, 95% CI [{d.interval[0]:+.4f}, "
                  f"{d.interval[1]:+.4f}], p = {d.p_value:.3g}: {'significant' if d.significant else 'not significant'}")
    print(f"\ntotal wall time {total / 60:.1f} min; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
