"""benchmarks/attention.py on the CPU: its interpreter smoke run, with another checkout's kernels
measured beside this one's (`--baseline`), each from its own checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_measures_a_baseline_checkout_beside_this_one(tmp_path):
    # A copy of the kernels package stands in for another checkout; the row says where its
    # kernels were imported from, so a baseline row cannot silently measure this checkout.
    other = tmp_path / "other"
    shutil.copytree(ROOT / "kernels", other / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attention.py"), "--interpret-smoke", "--baseline", str(other)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    table = [line.split() for line in lines if line.lstrip().startswith("48 ")]
    assert {row[2] for row in table} == {"triton", "triton_exact_rab", "triton_norab", "reference", "triton@baseline"}
    assert all(row[-1] == "ok" for row in table)
    assert any(line.startswith("N=48: baseline") for line in lines)


def test_a_baseline_worker_reports_the_checkout_it_imported(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(ROOT / "kernels", other / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attention.py"), "--interpret-smoke", "--code", str(other),
         "--impls", "triton_norab"],
        capture_output=True, text=True, env=env, cwd=other, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["status"] == "ok" and row["impl"] == "triton_norab" and row["max_len"] == 48
    assert Path(row["checkout"]) == other.resolve()
