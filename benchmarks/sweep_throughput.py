"""Where a sweep's wall time goes: the demo sweep and 40 tiny runs, optionally beside another checkout.

    python benchmarks/sweep_throughput.py                              # this checkout, both workloads
    python benchmarks/sweep_throughput.py --baseline /path/to/old/checkout --repeats 2
    python benchmarks/sweep_throughput.py --workloads tiny40 --repeats 1

Each (workload, checkout, repeat) launches the sweep in a fresh directory with that checkout's
code (`python -m gr_scaling sweep launch`, this interpreter, the checkout first on PYTHONPATH)
and times it; with `--baseline` the two checkouts alternate, so both see the same machine (this
one is noisy: compare the ratios, not absolute times). The ledger is then read with this
checkout's code:

    efficiency   sum of in-run time (training + evaluation) / (wall time x parallel slots)
    overhead     (wall time x slots - sum of in-run time) / runs: slot-seconds per run spent on
                 anything but training and evaluation (start-up, imports, dispatch, recording)
    phases       per run, the median seconds of each phase a job records (`sweeps.job_timing`)

A checkout older than the job timings records no in-run time; its "in-run" is then the trainer's
whole call (`wall_time_s` of result.json: data, model set-up, training and evaluation), an upper
bound, and the table says so. Reported metrics of the two checkouts are compared run by run (by
axis values). Writes benchmarks/results/sweep_throughput.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from checkouts import commit_of  # benchmarks/checkouts.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeps.ledger import Ledger  # noqa: E402
from sweeps.ledger_records import RunRecord  # noqa: E402
from sweeps.status import JOB_PHASES  # noqa: E402
from sweeps.storage import storage_url_for  # noqa: E402

TINY40 = """\
# 40 tiny runs (seeds of one shape): a ladder's smallest rungs, where fixed costs dominate.
[sweep]
name = "tiny40"
metric = "ndcg@10"

[axes]
seed = [{seeds}]

[base.data]
num_users = 200
num_items = 200
num_clusters = 10
min_events = 8
max_events = 30

[base.model]
embedding_dim = 8
num_blocks = 1
max_seq_len = 30

[base.train]
epochs = 2
batch_size = 64
num_negatives = 16

[dispatch]
executor = "local"
max_parallel = 2

[tracking]
mode = "offline"
project = "gr-scaling-throughput"
"""


def workload_specs() -> dict[str, str]:
    demo = (ROOT / "gr_scaling" / "demo_spec.toml").read_text()
    return {"demo": demo, "tiny40": TINY40.format(seeds=", ".join(str(s) for s in range(40)))}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", nargs="+", choices=sorted(workload_specs()), default=["tiny40", "demo"])
    p.add_argument("--baseline", type=Path, help="another checkout to run side by side (e.g. a worktree of main)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep_throughput.json")
    return p.parse_args(argv)


def launch(checkout: Path, spec_text: str, workdir: Path) -> float:
    """Run one sweep to the end with `checkout`'s code; its wall time in seconds."""
    spec = workdir / "spec.toml"
    spec.write_text(spec_text)
    env = {**os.environ, "PYTHONPATH": str(checkout), "WANDB_SILENT": "true"}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gr_scaling", "sweep", "launch", str(spec), "--out",
                           str(workdir / "sweep")], cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"error: the sweep failed in {checkout} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def measure(runs: dict[str, RunRecord], wall_s: float, slots: int) -> dict[str, Any]:
    complete = [r for r in runs.values() if r.state == "complete"]
    timed = all(r.timings for r in complete)
    in_run = [float(r.timings["in_run_s"]) if timed else float(r.wall_time_s or 0.0) for r in complete]
    phases = {}
    if timed:
        for phase in JOB_PHASES:
            values = [r.timings.get(f"{phase}_s") for r in complete]
            if all(v is not None for v in values):
                phases[phase] = statistics.median(values)
        inside = [
            sum(r.timings.get(f"{p}_s") or 0.0 for p in ("startup", "imports", "claim", "tracker", "record"))
            + max(r.timings["train_call_s"] - sum(r.timings[f"{p}_s"] for p in ("data", "setup", "train", "eval")), 0.0)
            + r.timings["data_s"] + r.timings["setup_s"]
            for r in complete
        ]
        phases["fixed cost seen inside the job"] = statistics.median(inside)
    return {
        "runs": len(complete),
        "wall_s": wall_s,
        "slots": slots,
        "in_run_s": sum(in_run),
        "in_run_measure": "training + evaluation" if timed else "the trainer's whole call (upper bound)",
        "efficiency": sum(in_run) / (wall_s * slots),
        "overhead_per_run_s": (wall_s * slots - sum(in_run)) / max(len(complete), 1),
        "median_phase_s": phases,
        "metrics": {json.dumps(r.axis_values, sort_keys=True): r.metrics for r in complete},
    }


def one(checkout: Path, workload: str, spec_text: str) -> dict[str, Any]:
    import tomllib

    spec = tomllib.loads(spec_text)
    with tempfile.TemporaryDirectory(prefix=f"throughput-{workload}-") as tmp:
        wall = launch(checkout, spec_text, Path(tmp))
        runs = Ledger(storage_url_for(Path(tmp) / "sweep"), spec["sweep"]["name"], create=False).runs()
        return measure(runs, wall, int(spec["dispatch"]["max_parallel"]))


def same_metrics(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a.keys() != b.keys():
        return "different runs"
    worst = max(abs(a[k][m] - b[k][m]) for k in a for m in a[k] if m in b[k])
    return "identical" if worst == 0 else f"max |difference| {worst:.3g}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkouts = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    for name, path in checkouts.items():
        if not (path / "gr_scaling").is_dir():
            raise SystemExit(f"error: --baseline {path}: not a gr-scaling checkout (no gr_scaling/); pass its root")
    specs = workload_specs()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {w: {c: [] for c in checkouts} for w in args.workloads}
    for workload in args.workloads:
        for repeat in range(args.repeats):
            # Alternate which checkout goes first, so drift of the machine hits both alike.
            order = list(checkouts) if repeat % 2 == 0 else list(reversed(checkouts))
            for name in order:
                result = one(checkouts[name], workload, specs[workload])
                results[workload][name].append(result)
                print(f"{workload} [{name} #{repeat + 1}]: {result['runs']} runs in {result['wall_s']:.1f} s, "
                      f"efficiency {result['efficiency']:.0%}", flush=True)
    table = ["| workload | checkout | wall (s) | efficiency | overhead per run (slot-s) | in-run measured as |",
             "|---|---|---|---|---|---|"]
    summary: dict[str, Any] = {}
    for workload, by_checkout in results.items():
        summary[workload] = {}
        for name, rows in by_checkout.items():
            wall = statistics.median(r["wall_s"] for r in rows)
            eff = statistics.median(r["efficiency"] for r in rows)
            over = statistics.median(r["overhead_per_run_s"] for r in rows)
            summary[workload][name] = {"wall_s": wall, "efficiency": eff, "overhead_per_run_s": over,
                                       "median_phase_s": rows[-1]["median_phase_s"]}
            table.append(f"| {workload} | {name} | {wall:.1f} | {eff:.0%} | {over:.2f} | {rows[-1]['in_run_measure']} |")
        if "baseline" in by_checkout:
            this, base = summary[workload]["this"], summary[workload]["baseline"]
            summary[workload]["wall_ratio_baseline_over_this"] = base["wall_s"] / this["wall_s"]
            summary[workload]["metrics"] = same_metrics(by_checkout["this"][0]["metrics"],
                                                        by_checkout["baseline"][0]["metrics"])
    print()
    print("\n".join(table))
    for workload, s in summary.items():
        phases = s["this"]["median_phase_s"]
        if phases:
            print(f"\n{workload}, median seconds per run (this checkout): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
        if "wall_ratio_baseline_over_this" in s:
            print(f"{workload}: baseline wall / this wall = {s['wall_ratio_baseline_over_this']:.2f}; "
                  f"reported metrics {s['metrics']}")
    out = {
        "benchmark": "sweep throughput: where a sweep's wall time goes",
        "command": "python benchmarks/sweep_throughput.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "checkouts": {k: str(v) for k, v in checkouts.items()},
        "commits": {k: commit_of(v) for k, v in checkouts.items()},
        "summary": summary,
        "runs": results,
        "table": "\n".join(table),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
