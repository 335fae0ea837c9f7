"""The README's main job: `gr-scaling demo`, killed mid-way and run again.

The demo takes the spec already in its output directory when there is one; the kill-and-rerun test
puts a smaller grid there (6 runs of the same sweep instead of 12: the full demo takes ~4 min on 2
cores), and `test_embedded_demo_spec_plans_the_documented_sweep` checks the embedded one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from gr_scaling.cli import DEMO_SPEC, main
from sweeps.ledger import Ledger, storage_url_for
from sweeps.plan import plan_sweep
from sweeps.spec import load_spec

EMBEDDED_SPEC = Path(__file__).resolve().parents[2] / "gr_scaling" / DEMO_SPEC


def _completed(sweep_dir: Path) -> dict[str, list[int]]:
    if not (sweep_dir / "ledger.db").exists():
        return {}
    done: dict[str, list[int]] = {}
    for trial in Ledger(storage_url_for(sweep_dir), "demo").study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,)
    ):
        done.setdefault(trial.user_attrs["run_id"], []).append(trial.number)
    return done


def test_embedded_demo_spec_plans_the_documented_sweep() -> None:
    spec = load_spec(EMBEDDED_SPEC)
    runs = plan_sweep(spec).runs
    flops = sorted(run.flops["train"] for run in runs)
    assert len(runs) == 12  # the README's demo output
    assert 1.8 < math.log10(flops[-1] / flops[0]) < 2.0  # "~1.9 orders of magnitude"
    assert (spec.dispatch.executor, spec.tracking.mode) == ("local", "offline")
    assert {(run.config["train"]["device"], run.config["train"]["precision"]) for run in runs} == {("auto", "fp32")}


@pytest.mark.slow
def test_demo_killed_midway_completes_on_rerun_without_rerunning(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    smaller = EMBEDDED_SPEC.read_text().replace("users = [1000, 2000, 4000, 8000]", "users = [300, 600, 1200]")
    smaller = smaller.replace("width = [16, 32, 64]", "width = [16, 32]")
    assert smaller.count("= [") == 2, "the embedded demo spec's axes changed; update this test"
    (out / DEMO_SPEC).write_text(smaller)
    driver = subprocess.Popen(
        [sys.executable, "-m", "gr_scaling", "demo", "--out", str(out), "--bootstrap", "100"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    try:
        while len(_completed(out / "sweep")) < 2:
            assert driver.poll() is None, "the demo ended before it could be killed"
            assert time.time() < deadline, "no demo runs completed in time"
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers
        driver.wait()
    before = _completed(out / "sweep")

    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    after = _completed(out / "sweep")
    assert len(after) == 6 and all(len(n) == 1 for n in after.values())
    assert all(after[run_id] == numbers for run_id, numbers in before.items())
    assert f"{6 - len(before)} runs trained now, {len(before)} already complete" in printed
    fit = json.loads((out / "report" / "fit.json").read_text())
    assert len(fit["points"]) == 6 and fit["power_law"] is not None
    assert fit["verdict"] in printed
    assert (out / "report" / "report.html").exists()
