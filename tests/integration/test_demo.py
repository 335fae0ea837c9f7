"""The README's main job: `gr-scaling demo`, killed mid-way and run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from gr_scaling.cli import main
from sweeps.ledger import Ledger, storage_url_for


def _completed(sweep_dir: Path) -> dict[str, list[int]]:
    if not (sweep_dir / "ledger.db").exists():
        return {}
    done: dict[str, list[int]] = {}
    for trial in Ledger(storage_url_for(sweep_dir), "demo").study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,)
    ):
        done.setdefault(trial.user_attrs["run_id"], []).append(trial.number)
    return done


@pytest.mark.slow
def test_demo_killed_midway_completes_on_rerun_without_rerunning(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    driver = subprocess.Popen(
        [sys.executable, "-m", "gr_scaling", "demo", "--out", str(out), "--bootstrap", "100"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    try:
        while len(_completed(out / "sweep")) < 3:
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
    assert len(after) == 12 and all(len(n) == 1 for n in after.values())
    assert all(after[run_id] == numbers for run_id, numbers in before.items())
    assert f"{12 - len(before)} runs trained now, {len(before)} already complete" in printed
    fit = json.loads((out / "report" / "fit.json").read_text())
    assert len(fit["points"]) == 12 and fit["power_law"] is not None
    assert fit["verdict"] in printed
    assert (out / "report" / "report.html").exists()
