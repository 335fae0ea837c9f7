"""benchmarks/kernel_static.py on one kernel: the fast rab path keeps its static properties.

Compiles the forward kernel for sm_90 on this CPU-only machine (a subprocess: the test session
runs Triton under its interpreter, which cannot compile) and fails if the fast rab path starts to
spill, loses its software pipelining, or gathers a weight per logit in the far-tile loop again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fast_rab_forward_compiles_without_spills_or_gathers_and_pipelined(tmp_path):
    out = tmp_path / "static.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernel_static.py"), "--arch", "90", "--kernels", "fwd",
         "--variants", "norab", "rab_exact", "rab_fast", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    costs = {c["variant"]: c for c in json.loads(out.read_text())["costs"]}
    fast, exact, base = costs["rab_fast"], costs["rab_exact"], costs["norab"]
    assert fast["spill_store_bytes"] == 0 and fast["spill_load_bytes"] == 0
    assert fast["pipelined"] and base["pipelined"]
    # The per-logit path gathers weights and thresholds (4 loads of 4 bytes per logit); the fast
    # one loads the positional block as 16-byte vectors and one edge row per tile row.
    assert exact["scalar_loads_per_logit"] >= 2.0
    assert fast["scalar_loads_per_logit"] <= 0.5
    assert fast["instructions_per_logit"] < 0.6 * exact["instructions_per_logit"]
    assert "fwd" in done.stdout and "rab_fast" in done.stdout  # the table is printed
