"""Operating a sweep after launch: detach, cancel, retry-failed, export, W&B sync.

The driver records its pid in `<sweep dir>/driver.pid` while it runs; `cancel` stops it first (so
nothing new is submitted), then the workers (Slurm jobs with `scancel`, which also takes a job that
is queued or requeued; local workers by pid), and marks every pending or running attempt cancelled. A cancelled attempt does not count against max_attempts:
`resume` (a launch with the sweep's stored spec) runs those runs again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from slurm.cancel import cancel_slurm_jobs, kill_local_process
from slurm.dispatch import resolve_executor
from sweeps.launch import DRIVER_PID, SPEC_COPY, open_ledger
from sweeps.ledger import RunRecord
from sweeps.spec import load_spec

log = logging.getLogger(__name__)

DRIVER_LOG = "driver.log"


def stored_spec(sweep_dir: str | Path) -> Path:
    path = Path(sweep_dir) / SPEC_COPY
    if not path.exists():
        raise ValueError(f"{sweep_dir} is not a sweep directory (no {SPEC_COPY}); launch a sweep into it first")
    return path


def detach(spec_path: str | Path, sweep_dir: str | Path) -> int:
    """Start the launch in a new session that outlives this process; returns the driver's pid."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    load_spec(spec_path)  # fail here, in the foreground, on a bad spec
    with open(sweep_dir / DRIVER_LOG, "ab") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "gr_scaling", "sweep", "launch", str(spec_path), "--out", str(sweep_dir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return driver.pid


def _driver_pid(sweep_dir: Path) -> int | None:
    try:
        host, pid = (sweep_dir / DRIVER_PID).read_text().split()
    except (OSError, ValueError):
        return None
    if host != socket.gethostname():
        log.warning("the driver of %s runs on %s; stop it there", sweep_dir, host)
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        if b"gr_scaling" not in cmdline and b"gr-scaling" not in cmdline:
            return None  # the pid was reused by something else
    except OSError:
        return None
    return int(pid)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CancelSummary:
    driver_stopped: bool
    cancelled: int
    slurm_jobs: list[str]


def cancel(sweep_dir: str | Path) -> CancelSummary:
    sweep_dir = Path(sweep_dir)
    spec = load_spec(stored_spec(sweep_dir))
    driver = _driver_pid(sweep_dir)
    if driver is not None and driver != os.getpid():
        os.kill(driver, signal.SIGKILL)
    ledger = open_ledger(spec, sweep_dir)
    on_slurm = resolve_executor(spec.dispatch) == "slurm"
    host, slurm_jobs, cancelled = socket.gethostname(), [], 0
    for trial in ledger.active_attempts():
        worker = trial.system_attrs.get("worker", {})
        job_id = trial.user_attrs.get("job_id")
        if on_slurm and job_id:
            # Not the worker's pid even when it runs here: a job whose process is gone may be
            # queued again (requeued), and killing a task's process leaves the job to Slurm.
            slurm_jobs.append(job_id)
        elif worker.get("host") == host and worker.get("pid"):
            kill_local_process(int(worker["pid"]))
        cancelled += ledger.cancel(trial._trial_id)
    if slurm_jobs:
        cancel_slurm_jobs(slurm_jobs)
    return CancelSummary(driver_stopped=driver is not None, cancelled=cancelled, slurm_jobs=slurm_jobs)


def retry_failed(sweep_dir: str | Path) -> list[str]:
    """Give failed runs a fresh round of attempts (run `resume` to execute them)."""
    sweep_dir = Path(sweep_dir)
    return open_ledger(load_spec(stored_spec(sweep_dir)), sweep_dir).retry_failed()


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif not isinstance(value, (list, tuple)):
        out[prefix] = value


def export_rows(runs: dict[str, RunRecord]) -> list[dict[str, Any]]:
    """One flat row per run: id, state, attempts, error, timing, then config.*, planned.* (the plan's
    FLOPs and tokens, all epochs), spent.* (what a completed run spent: through its last epoch, and
    through the reported one, "*_at_best"), params.*, metrics.*."""
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
        rows.append(row)
    return rows


def export(sweep_dir: str | Path, out: str | Path) -> int:
    """Write every run to CSV or Parquet (by the file's suffix); returns the number of rows."""
    import pandas as pd

    sweep_dir, out = Path(sweep_dir), Path(out)
    spec = load_spec(stored_spec(sweep_dir))
    frame = pd.DataFrame(export_rows(open_ledger(spec, sweep_dir).runs()))
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
    runs = sorted((Path(sweep_dir) / "wandb").glob("offline-run-*"))
    if not runs:
        raise ValueError(f"{sweep_dir} has no offline W&B runs under wandb/ (tracking.mode = 'offline' writes them)")
    wandb_cli = Path(sys.executable).with_name("wandb")
    result = subprocess.run([str(wandb_cli), "sync", *map(str, runs)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"wandb sync failed (exit {result.returncode}): {result.stderr.strip()[-500:]}; "
            "check the network and `wandb login`, then run it again (the offline runs are kept)"
        )
    return runs
