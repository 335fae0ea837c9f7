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


def test_census_counts_the_tile_kinds_the_readme_quotes():
    # `--census` is where the README's tile shares come from (no kernels run).
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attention.py"), "--census", "--lengths", "256", "4096"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    short, long = done.stdout.splitlines()
    assert short.startswith("N=256: diagonal tiles span 35.1 edges")
    # At 256 every many-edge far tile lies within the band; at 4096 most of their edges do.
    assert "'many_edge_tiles': 206, 'many_edge_tiles_in_band': 206" in short
    assert "'diagonal_tiles': 537, 'far_tiles': 5976" in long
    assert "'many_edge_edges': 11342, 'many_edge_edges_in_band': 9486" in long
    assert "'loop_runs_on_tile_rows': 974, 'loop_runs_on_whole_rows': 1341" in long
