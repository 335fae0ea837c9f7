"""Planning and status at sweep scale: `plan` of a 10,000-run grid and `status` of a 10,000-trial ledger.

Targets (issue 7, 2 cores): plan < 5 s, status < 3 s. Prints the timings and writes
benchmarks/results/sweep_scale.json.

    .venv/bin/python benchmarks/sweep_scale.py [--runs-per-side 10 --seeds 100]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from sweeps.ledger import Ledger, storage_url_for
from sweeps.plan import format_plan, plan_sweep
from sweeps.spec import spec_from_dict
from sweeps.status import format_status

RESULTS = Path(__file__).resolve().parent / "results" / "sweep_scale.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs-per-side", type=int, default=10, help="values per depth and width axis")
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args()
    side = args.runs_per_side
    raw = {
        "sweep": {"name": "scale"},
        "axes": {
            "depth": list(range(1, side + 1)),
            "width": [16 * (i + 1) for i in range(side)],
            "seed": list(range(args.seeds)),
        },
    }
    started = time.perf_counter()
    spec = spec_from_dict(raw, source="scale.toml")
    plan = plan_sweep(spec)
    text = format_plan(plan)
    plan_s = time.perf_counter() - started
    print(text.splitlines()[-2])
    print(f"plan of {len(plan.runs):,} runs (validate, expand, count params and FLOPs, format): {plan_s:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(storage_url_for(tmp), "scale")
        started = time.perf_counter()
        ledger.register(plan.runs)
        register_s = time.perf_counter() - started
        print(f"register {len(plan.runs):,} runs in the SQLite ledger: {register_s:.1f} s")
        started = time.perf_counter()
        status = format_status(spec, Ledger(storage_url_for(tmp), "scale").runs())
        status_s = time.perf_counter() - started
        print(status.splitlines()[1])
        print(f"status of a {len(plan.runs):,}-trial ledger (open, read, summarise): {status_s:.2f} s")

    result = {
        "runs": len(plan.runs),
        "plan_s": plan_s,
        "register_s": register_s,
        "status_s": status_s,
        "targets": {"plan_s": 5.0, "status_s": 3.0},
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
