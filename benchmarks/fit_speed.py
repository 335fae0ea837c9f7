"""Benchmark the two-variable scaling-law fit: 240 runs, 1,000 bootstrap resamples (target < 60 s).

    python benchmarks/fit_speed.py            # writes benchmarks/results/fit_speed.json
    python benchmarks/fit_speed.py --points 480 --bootstrap 2000 --repeats 1

Data: a 12 x 20 grid of (N, D) over three decades each, L = Hoffmann et al.'s published law times
1% log-normal noise. Timed: `analysis.chinchilla.fit_chinchilla` end to end (grid of 2,500 starts,
batched L-BFGS from the best 32, scipy L-BFGS-B certification, then the bootstrap refits, all
stepped together by `analysis.lbfgs.minimize_batch`), best and median of `--repeats` runs. The
bootstrap-only time is the difference from the same fit with no resamples. The machine's load
average is recorded beside the timings: on a shared machine it explains their spread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy  # noqa: E402

from analysis.chinchilla import fit_chinchilla  # noqa: E402

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
TARGET_S = 60.0


def data(points: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = 12
    tokens = max(points // sizes, 1)
    n = np.repeat(np.geomspace(1e6, 1e9, sizes), tokens)
    d = np.tile(np.geomspace(1e8, 1e11, tokens), sizes)
    loss = TRUTH["E"] + TRUTH["A"] / n ** TRUTH["alpha"] + TRUTH["B"] / d ** TRUTH["beta"]
    return n, d, loss * np.exp(np.random.default_rng(seed).normal(0.0, 0.01, n.size))


def timed(n: np.ndarray, d: np.ndarray, y: np.ndarray, n_bootstrap: int) -> tuple[float, object]:
    start = time.perf_counter()
    fit = fit_chinchilla(n, d, y, n_bootstrap=n_bootstrap, seed=0)
    return time.perf_counter() - start, fit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=240)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fit_speed.json"))
    args = parser.parse_args()

    n, d, y = data(args.points, seed=0)
    timed(n, d, y, 10)  # warm-up: imports, caches
    totals, fits = [], []
    for _ in range(args.repeats):
        seconds, fit = timed(n, d, y, args.bootstrap)
        totals.append(seconds)
        fits.append(fit)
    point_only = min(timed(n, d, y, 0)[0] for _ in range(args.repeats))
    fit = fits[0]
    result = {
        "benchmark": "two-variable L(N, D) fit (Chinchilla approach 3) with bootstrap",
        "points": int(n.size),
        "bootstrap": args.bootstrap,
        "repeats": args.repeats,
        "total_s_best": min(totals),
        "total_s_median": statistics.median(totals),
        "total_s_all": totals,
        "point_fit_s_best": point_only,
        "bootstrap_s_best": min(totals) - point_only,
        "target_s": TARGET_S,
        "passes": max(totals) < TARGET_S,
        "converged": bool(fit.converged),
        "n_bootstrap_used": fit.n_bootstrap_used,
        "n_bootstrap_not_converged": fit.n_bootstrap_not_converged,
        "params": fit.params,
        "param_intervals_95": {k: list(v) for k, v in fit.param_intervals.items()},
        "truth": TRUTH,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_1m": os.getloadavg()[0],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
    }
    print(f"{result['points']} points, {args.bootstrap} bootstrap resamples: best {result['total_s_best']:.2f} s, "
          f"median {result['total_s_median']:.2f} s over {args.repeats} (point fit {point_only:.2f} s; "
          f"target < {TARGET_S:.0f} s: {'PASS' if result['passes'] else 'FAIL'}); "
          f"load average {result['machine']['load_average_1m']:.1f} on {os.cpu_count()} cores")
    print("params:", {k: round(v, 4) for k, v in fit.params.items()})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if result["passes"] else 1


if __name__ == "__main__":
    sys.exit(main())
