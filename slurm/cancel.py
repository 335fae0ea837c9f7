"""Stopping dispatched work: local worker processes by pid, Slurm jobs with `scancel`."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable

log = logging.getLogger(__name__)


def kill_local_process(pid: int) -> bool:
    """SIGKILL a local worker (submitit's job processes ignore SIGTERM). False if it was gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def cancel_slurm_jobs(job_ids: Iterable[str]) -> list[str]:
    """`scancel` the given job ids (array tasks as "123_4"); returns the ids handed to scancel."""
    ids = sorted({job_id for job_id in job_ids if job_id})
    if not ids:
        return []
    if shutil.which("scancel") is None:
        raise RuntimeError(f"cannot cancel Slurm jobs {ids}: scancel is not on PATH")
    result = subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        log.warning("scancel %s: %s", " ".join(ids), result.stderr.strip())
    return ids
