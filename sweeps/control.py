"""Operating a sweep after launch: detach, cancel, retry-failed, export, W&B sync.

The live driver holds `<sweep dir>/driver.lock` (`sweeps.driver`); `cancel` stops it first (so
nothing new is submitted), then marks every pending or running attempt cancelled and stops the
workers (`sweeps.stopping`: Slurm jobs with `scancel`, which also takes a job that is queued or
requeued; local workers by pid). A cancelled attempt does not count against max_attempts:
`resume` (a launch with the sweep's stored spec) runs those runs again. None of these commands
creates a ledger: a missing or damaged one is reported with the way out (`rebuild-ledger`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from slurm.dispatch import resolve_executor
from sweeps.driver import SweepBusy, read_driver
from sweeps.layout import SweepLayout
from sweeps.ledger import RunRecord
from sweeps.spec import MAX_RUNS, load_spec
from sweeps.stopping import stop_active_attempts
from sweeps.storage import pid_alive

log = logging.getLogger(__name__)


def detach(spec_path: str | Path, sweep_dir: str | Path, *, max_runs: int | None = MAX_RUNS) -> int:
    """Start the launch in a new session that outlives this process (its output goes to
    `SweepLayout.driver_log`); returns the driver's pid.

    max_runs: the grid-size guard (`sweeps.spec.MAX_RUNS`); None (`--allow-large`) is passed on.
    """
    sweep_dir = Path(sweep_dir)
    load_spec(spec_path, max_runs=max_runs)  # fail here, in the foreground, on a bad spec
    driver = read_driver(sweep_dir)
    if driver is not None and driver.alive:  # the background driver would refuse too, unseen
        raise SweepBusy(f"{sweep_dir} is already being driven by pid {driver.pid} on {driver.host}; follow it "
                        f"with `gr-scaling sweep status {sweep_dir}` or stop it with `gr-scaling sweep cancel {sweep_dir}`")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(SweepLayout(sweep_dir).driver_log, "ab") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "gr_scaling", "sweep", "launch", str(spec_path), "--out", str(sweep_dir),
             *(["--allow-large"] if max_runs is None else [])],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return driver.pid


def _live_driver_pid(sweep_dir: Path) -> int | None:
    """The pid of this sweep's live driver on this host (it holds the driver lock), else None."""
    driver = read_driver(sweep_dir)
    if driver is None or not driver.alive:
        return None
    if driver.host != socket.gethostname():
        log.warning("the driver of %s runs on %s (pid %d); stop it there", sweep_dir, driver.host, driver.pid)
        return None
    return driver.pid


def _stop_driver(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM the driver (it cancels its attempts and stops its workers), SIGKILL if it lingers."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):  # an exited driver not yet reaped by its parent (a zombie) has stopped too
            return
        time.sleep(0.1)
    log.warning("driver %d did not stop within %.0f s of SIGTERM; killing it", pid, timeout_s)
    os.kill(pid, signal.SIGKILL)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CancelSummary:
    driver_stopped: bool
    cancelled: int
    slurm_jobs: list[str]


def cancel(sweep_dir: str | Path) -> CancelSummary:
    """Stop the live driver and every active attempt; reports the attempts cancelled by this call,
    whether the driver cancelled them on its SIGTERM or this command did (no driver, or one that had
    to be killed), with the Slurm jobs handed to scancel."""
    layout = SweepLayout(Path(sweep_dir))
    spec = layout.load_spec()
    ledger = layout.open_ledger(spec)
    on_slurm = resolve_executor(spec.dispatch) == "slurm"
    earlier = set(ledger.cancelled_attempts())
    driver = _live_driver_pid(layout.root)
    if driver is not None and driver != os.getpid():
        _stop_driver(driver)
    stop_active_attempts(ledger, on_slurm=on_slurm)
    now = {trial: job for trial, job in ledger.cancelled_attempts().items() if trial not in earlier}
    slurm_jobs = sorted({job for job in now.values() if job}) if on_slurm else []
    return CancelSummary(driver_stopped=driver is not None, cancelled=len(now), slurm_jobs=slurm_jobs)


def retry_failed(sweep_dir: str | Path) -> list[str]:
    """Give failed runs a fresh round of attempts (run `resume` to execute them)."""
    layout = SweepLayout(Path(sweep_dir))
    return layout.open_ledger(layout.load_spec()).retry_failed()


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif not isinstance(value, (list, tuple)):
        out[prefix] = value


def export_rows(runs: dict[str, RunRecord]) -> list[dict[str, Any]]:
    """One flat row per run of every state (the ledger's `RunRecord`s; the analysis reads completed
    runs as `sweeps.rows.RunRow`s instead): id, state, attempts, error, timing, then config.*,
    planned.* (the plan's FLOPs and tokens, all epochs), spent.* (`sweeps.rows.SpentCompute`: through
    the last epoch trained, and through the reported one, "*_at_best"), params.*, metrics.*,
    timings.* (`sweeps.job_timing`)."""
    rows = []
    for record in sorted(runs.values(), key=lambda r: r.flops.get("train", 0.0)):
        row: dict[str, Any] = {
            "run_id": record.run_id,
            "state": record.state,
            "attempts": record.attempts,
            "value": record.value,
            "error": record.error,
            "job_id": record.job_id,
            "wall_time_s": record.wall_time_s,
        }
        _flatten("axis", record.axis_values, row)
        _flatten("config", record.config, row)
        _flatten("planned", {k: v for k, v in record.flops.items() if not isinstance(v, str)}, row)
        _flatten("spent", record.spent, row)
        _flatten("params", record.params, row)
        _flatten("metrics", record.metrics, row)
        _flatten("timings", record.timings, row)
        rows.append(row)
    return rows


def export(sweep_dir: str | Path, out: str | Path) -> int:
    """Write every run to CSV or Parquet (by the file's suffix); returns the number of rows."""
    import pandas as pd

    layout, out = SweepLayout(Path(sweep_dir)), Path(out)
    frame = pd.DataFrame(export_rows(layout.open_ledger(layout.load_spec()).runs()))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        frame.to_csv(out, index=False)
    elif out.suffix in (".parquet", ".pq"):
        frame.to_parquet(out, index=False)
    else:
        raise ValueError(f"export file {out} must end in .csv or .parquet")
    return len(frame)


def sync_wandb(sweep_dir: str | Path) -> list[Path]:
    """Upload the sweep's offline W&B runs with `wandb sync`; returns the run folders synced."""
    runs = sorted(SweepLayout(Path(sweep_dir)).wandb.glob("offline-run-*"))
    if not runs:
        raise ValueError(f"{sweep_dir} has no offline W&B runs under wandb/ (tracking.mode = 'offline' writes them, "
                         "and so does an online run that could not reach W&B)")
    wandb_cli = Path(sys.executable).with_name("wandb")
    result = subprocess.run([str(wandb_cli), "sync", *map(str, runs)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"wandb sync failed (exit {result.returncode}): {result.stderr.strip()[-500:]}; "
            "check the network and `wandb login`, then run it again (the offline runs are kept)"
        )
    return runs
