"""Coverage of the Performance Law's intervals, by simulation.

    python benchmarks/performance_law_coverage.py                      # 100 studies, 100 refits each
    python benchmarks/performance_law_coverage.py --studies 200 --bootstrap 200 --noise 2e-4 2e-3

Simulates 64-run studies on a grid of layers {1, 2, 4, 8} x width {16, 32, 64, 128} x data
{2e3 .. 2e6} from known parameters plus Gaussian noise, fits each with residual-bootstrap
intervals (`analysis.performance_law.fit`) and counts how often each parameter's interval holds
its true value, among the studies where the fit gives one (it gives none for a parameter it
finds the runs cannot tell; how often it does is reported too). Prints a table and writes
benchmarks/results/performance_law_coverage.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import performance_law as law  # noqa: E402

TRUE = np.array([-0.02, 0.8, -0.015, 0.6, -0.01, 0.4, 0.05])  # w_L, a_L, w_d, a_d, w_D, a_D, b


def grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = list(itertools.product((1, 2, 4, 8), (16, 32, 64, 128), (2e3, 2e4, 2e5, 2e6)))
    return tuple(np.array(column, dtype=float) for column in zip(*rows))  # type: ignore[return-value]


def coverage(noise: float, *, studies: int, bootstrap: int, level: float, seed: int) -> dict[str, float]:
    layers, dim, data = grid()
    clean = law.predict(TRUE, layers, dim, data)
    rng = np.random.default_rng(seed)
    hits, given = np.zeros(len(law.PARAMS)), np.zeros(len(law.PARAMS))
    for study in range(studies):
        y = clean + rng.normal(0.0, noise, clean.size)
        fitted = law.fit(layers, dim, data, y, n_bootstrap=bootstrap, level=level, seed=seed + study)
        given += np.isfinite(fitted.lower)  # the fit gives no interval where it says the runs cannot tell
        hits += (fitted.lower <= TRUE) & (TRUE <= fitted.upper)
    return {name: {"coverage": h / g if g else None, "interval_given": g / studies}
            for name, h, g in zip(law.PARAMS, hits.tolist(), given.tolist())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=100)
    p.add_argument("--bootstrap", type=int, default=100)
    p.add_argument("--level", type=float, default=0.90)
    p.add_argument("--noise", type=float, nargs="+", default=[2e-4, 2e-3])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "performance_law_coverage.json")
    args = p.parse_args(argv)
    results = {}
    for noise in args.noise:
        began = time.perf_counter()
        results[str(noise)] = coverage(noise, studies=args.studies, bootstrap=args.bootstrap, level=args.level, seed=5)
        row = ", ".join(f"{k} {v['coverage']:.2f} (given {v['interval_given']:.0%})" if v["coverage"] is not None
                        else f"{k} never given" for k, v in results[str(noise)].items())
        print(f"noise sd {noise:g}: {row} ({time.perf_counter() - began:.0f} s)", flush=True)
    binomial_sd = (args.level * (1 - args.level) / args.studies) ** 0.5
    doc = {
        "benchmark": "coverage of the Performance Law's residual-bootstrap intervals",
        "command": "python benchmarks/performance_law_coverage.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "true_params": dict(zip(law.PARAMS, TRUE.tolist())), "level": args.level, "studies": args.studies,
        "bootstrap": args.bootstrap, "binomial_sd": binomial_sd, "coverage_by_noise_sd": results,
        "machine": {"platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"nominal {args.level:.0%}, binomial sd {binomial_sd:.1%}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
