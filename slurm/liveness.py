"""Asking Slurm which jobs are still alive: queued, running, requeued, held or suspended.

A job that Slurm requeued (preemption, `scontrol requeue`, submitit's requeue at the time limit)
waits in the queue with no process, possibly for hours, and then runs again under the same job
id. The sweep ledger asks here before it gives up on an attempt whose worker went quiet.

One `squeue` call answers for every id. squeue asks slurmctld, which holds every job that has not
ended (and an ended one for MinJobAge, 300 s by default, in its final state), so a job it does not
list has ended. `sacct` (what submitit polls) needs the accounting database, lags behind it, and
lists an array task that has not started yet only as its array ("123_[0-7]"), not as "123_4".
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable

log = logging.getLogger(__name__)

# Slurm's final job states (squeue/sacct long names). Anything else, including states added by
# later Slurm versions, counts as alive: keeping an attempt of a dead job running only delays its
# retry, failing one whose job comes back would let two jobs train the same run.
TERMINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "REVOKED", "TIMEOUT",
})

# "123", or "123_4" for an array task: what submitit records as a job id on Slurm.
_JOB_ID = re.compile(r"\d+(_\d+)?")
SQUEUE_FORMAT = "%i|%T"
SQUEUE_TIMEOUT_S = 60


def squeue_command(job_ids: list[str]) -> list[str]:
    # -r: one line per array task (else pending tasks show as "123_[0-7]"); -t all: ended jobs too.
    return ["squeue", "--noheader", "--array", "--states=all", f"--format={SQUEUE_FORMAT}", f"--jobs={','.join(job_ids)}"]


def parse_squeue_states(text: str) -> dict[str, str]:
    """Job id -> state from `squeue --noheader --array --format=%i|%T` output ("123_4|PENDING" a line)."""
    states = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        job_id, sep, state = line.strip().partition("|")
        if not sep or not _JOB_ID.fullmatch(job_id) or not state.strip():
            raise ValueError(f"squeue output line {number} is {line!r}; expected JOBID|STATE such as '123_4|PENDING'")
        states[job_id] = state.strip()
    return states


def is_alive(state: str) -> bool:
    """Whether a job in Slurm state `state` may still run (sacct's "CANCELLED by 0" counts as CANCELLED)."""
    words = state.split()
    if not words:
        raise ValueError("empty Slurm job state; expected a state name such as 'PENDING' or 'COMPLETED'")
    return words[0].upper() not in TERMINAL_STATES


def check_job_ids(job_ids: Iterable[str]) -> list[str]:
    """The ids, sorted and without duplicates; a ValueError names any that is not a Slurm job id."""
    ids = list(job_ids)
    bad = [job_id for job_id in ids if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id)]
    if bad:
        raise ValueError(
            f"job_ids {bad!r} are not Slurm job ids; pass ids as submitit records them: '123', or '123_4' for an array task"
        )
    return sorted(set(ids))


def slurm_jobs_alive(job_ids: Iterable[str]) -> dict[str, bool]:
    """For each job id, whether Slurm still has the job alive (not in a final state, nor forgotten).

    When Slurm cannot be asked (squeue missing, failing or timing out), the answer is empty, that
    is, unknown for every id, and a warning says why: callers must not take silence for death.
    """
    ids = check_job_ids(job_ids)
    if not ids:
        return {}
    if shutil.which("squeue") is None:
        log.warning("cannot ask Slurm about jobs %s: squeue is not on PATH", ", ".join(ids))
        return {}
    command = squeue_command(ids)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot ask Slurm about jobs %s (%s): %s", ", ".join(ids), " ".join(command), exc)
        return {}
    if proc.returncode != 0:
        # Asked about one id that slurmctld no longer knows, squeue fails (several such ids: no
        # output, exit 0). A forgotten job has ended.
        if len(ids) == 1 and "Invalid job id specified" in proc.stderr:
            return {ids[0]: False}
        log.warning(
            "cannot ask Slurm about jobs %s: %s exited with %d: %s",
            ", ".join(ids), " ".join(command), proc.returncode, proc.stderr.strip(),
        )
        return {}
    try:
        states = parse_squeue_states(proc.stdout)
    except ValueError as exc:
        log.warning("cannot read squeue's answer about jobs %s: %s", ", ".join(ids), exc)
        return {}
    log.debug("Slurm job states: %s", states)
    return {job_id: job_id in states and is_alive(states[job_id]) for job_id in ids}
