"""The run ledger: an Optuna storage holding one trial per attempt of each planned run.

Optuna is the durable store (SQLite file in the sweep directory by default; any RDB URL works),
so `optuna-dashboard` can open a sweep. The mapping:
- a planned run is identified by `run_id`, kept with its config, axis values, FLOPs and params
  as the trial's user attrs (`sweeps.ledger_records`);
- an attempt is a trial: WAITING (pending) -> RUNNING (claimed by exactly one worker) ->
  COMPLETE / FAIL. Optuna never lets a finished trial change state, so a retry is a new trial;
- the run's state is its latest attempt's, except that one COMPLETE attempt makes it complete;
- workers record Optuna heartbeats (a timestamp attr on storages without them, e.g. the
  journal); a RUNNING attempt whose heartbeat went stale, or whose local worker process is gone,
  is failed on the next launch and retried until it has used `max_attempts`; unless the
  scheduler (`recover(job_alive=...)`) says its job is still alive: a requeued Slurm job waits in
  the queue with no process, then takes its attempt back (`reclaim`) under the same job id;
- a cancelled attempt is failed with user attr "cancelled" and does not count as an attempt;
  `retry_failed` gives runs that used up their attempts a fresh round.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from sweeps.ledger_records import (
    PlannedRun,
    RunRecord,
    attempt_attrs,
    attempt_number,
    replan,
    state_name,
    to_record,
)
from sweeps.optuna_adapter import study_id_of, trial_id_of
from sweeps.storage import (
    HEARTBEAT_GRACE_S,
    Heartbeat,
    open_existing_storage,
    open_storage,
    pid_alive,
    record_heartbeat,
    stale_heartbeats,
    storage_url_for,
)

log = logging.getLogger(__name__)


# A run with an attempt in one of these states needs no retry: it finished (complete, or pruned by
# the tuner) or an attempt is pending or running.
_SETTLED_OR_ACTIVE = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING}

# Asked about the job ids of attempts that look dead: for each id it could find out about, whether
# the scheduler still has that job alive (queued, requeued, held, running...); ids it leaves out
# are unknown. `slurm.liveness.slurm_jobs_alive` is the Slurm one.
JobAlive = Callable[[list[str]], Mapping[str, bool]]

_FEW_ATTEMPTS = 32  # `attempt_states` reads up to this many one by one rather than the whole study...
# ... unless the study has at most this many unfinished attempts per wanted one: a whole-study read
# re-reads only unfinished attempts (Optuna caches finished ones in the process) at ~0.25 ms each
# in one query, against ~2 ms for an attempt read alone (SQLite, 12 and 200 pending attempts).
_WHOLE_STUDY_PER_WANTED = 8


# An attempt's system attrs "claimant:<host>:<pid>" = {"host", "pid"}: the processes that tried to take it.
CLAIMANT_PREFIX = "claimant:"


def _lost_claim(trial: FrozenTrial, host: str) -> str | None:
    """Why a running attempt that never recorded its worker is dead, or None while it may be
    alive: every claimant on this host is gone, or (claimants elsewhere, or an attempt taken before
    claimants were recorded) it was taken longer ago than a heartbeat may be late."""
    claimants = [v for k, v in trial.system_attrs.items() if k.startswith(CLAIMANT_PREFIX)]
    here = [c for c in claimants if c.get("host") == host]
    if claimants and len(here) == len(claimants) and not any(pid_alive(int(c.get("pid", -1))) for c in here):
        pids = ", ".join(str(c.get("pid")) for c in here)
        return f"the process that took it ({pids} on {host}) died before recording itself as its worker"
    started = trial.datetime_start
    if started is not None and time.time() - started.timestamp() > HEARTBEAT_GRACE_S:
        return f"taken at {started:%Y-%m-%d %H:%M:%S} and no worker recorded itself within {HEARTBEAT_GRACE_S} s"
    return None


class Ledger:
    """A sweep's runs in one Optuna study (one study per sweep name).

    create=False opens an existing ledger only (read-only commands, `cancel`, `retry-failed`): a
    missing, empty or damaged one raises `sweeps.storage.LedgerUnavailable` naming the file and
    `gr-scaling sweep rebuild-ledger`, and nothing is created.
    """

    def __init__(self, url: str, sweep_name: str, *, higher_is_better: bool = True, create: bool = True) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url = url
        if create:
            self.storage = open_storage(url)
            self.study = optuna.create_study(
                study_name=sweep_name,
                storage=self.storage,
                direction="maximize" if higher_is_better else "minimize",
                load_if_exists=True,
            )
        else:
            self.storage, self.study = open_existing_storage(url, sweep_name)
        # Unfinished attempts at this process's last whole-study read (None before one): what the
        # next whole-study read costs, roughly (`attempt_states`).
        self._unfinished_seen: int | None = None

    # ---- reading -------------------------------------------------------------------------
    def _trials(self) -> list[FrozenTrial]:
        trials = self.study.get_trials(deepcopy=False)
        self._unfinished_seen = sum(1 for t in trials if not t.state.is_finished())
        return trials

    def _trials_by_run(self) -> dict[str, list[FrozenTrial]]:
        grouped: dict[str, list[FrozenTrial]] = {}
        for trial in self._trials():
            grouped.setdefault(trial.user_attrs["run_id"], []).append(trial)
        return grouped

    def runs(self) -> dict[str, RunRecord]:
        """Every run in the ledger, by run id: the completed attempt if any, else the latest."""
        records = {}
        for run_id, trials in self._trials_by_run().items():
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            latest = max(trials, key=lambda t: t.number)
            chosen = complete[0] if complete else latest
            records[run_id] = to_record(chosen, attempts=attempt_number(latest))
        return records

    def attempts(self, run_id: str) -> list[RunRecord]:
        trials = sorted(self._trials_by_run().get(run_id, []), key=lambda t: t.number)
        return [to_record(t, attempts=attempt_number(t)) for t in trials]

    # ---- planning ------------------------------------------------------------------------
    def known_run_ids(self) -> set[str]:
        return set(self._trials_by_run())

    def register(self, planned: Iterable[PlannedRun]) -> int:
        """Add a pending attempt for every planned run the ledger has never seen; return the count."""
        known = self._trials_by_run()
        added = 0
        for run in planned:
            if run.run_id not in known:
                self._add_attempt(run, attempt=1)
                added += 1
        return added

    def _add_attempt(self, run: PlannedRun, *, attempt: int) -> None:
        self.study.add_trial(create_trial(state=TrialState.WAITING, user_attrs=attempt_attrs(run, attempt)))

    def restore(
        self, run: PlannedRun, *, results: dict[str, Any] | None = None, value: float | None = None,
        error: str | None = None, source: str,
    ) -> None:
        """Record a finished attempt read back from its run directory (`sweeps.rebuild`): complete
        with its results, or failed with its error line; `source` names the file it came from."""
        attrs = {**attempt_attrs(run, 1), "restored_from": source}
        if results is not None:
            if value is None:
                raise ValueError(f"{source}: no value of the sweep's metric in its results")
            self.study.add_trial(create_trial(state=TrialState.COMPLETE, value=float(value),
                                              user_attrs={**attrs, **results}))
        else:
            self.study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={**attrs, "error": error}))

    def recover(self, *, max_attempts: int, job_alive: JobAlive | None = None) -> list[str]:
        """Fail attempts whose worker died, and queue a retry for each failed run with attempts left.

        A running attempt looks dead when its heartbeat is older than the grace period or its
        worker process on this host is gone. With `job_alive` (a sweep on a scheduler), an attempt
        that has a job id is failed only when the scheduler says its job has ended: a requeued
        job is alive while it waits in the queue, and resumes the same attempt. Returns the run
        ids queued again.
        """
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"recover(max_attempts=...) must be an int >= 1 (sweep.max_attempts), got {max_attempts!r}")
        if job_alive is not None and not callable(job_alive):
            raise TypeError(
                f"recover(job_alive=...) must be None or a callable taking a list of job ids and returning "
                f"{{job_id: alive}} (e.g. slurm.liveness.slurm_jobs_alive), got {type(job_alive).__name__}"
            )
        self._fail_dead_workers(job_alive)
        requeued = []
        for run_id, trials in self._trials_by_run().items():
            states = {t.state for t in trials}
            if states & _SETTLED_OR_ACTIVE:
                continue
            latest = max(trials, key=lambda t: t.number)
            used = attempt_number(latest)
            if latest.user_attrs.get("cancelled"):
                self._add_attempt(replan(latest), attempt=used)  # a cancelled attempt does not count
            elif used < max_attempts:
                self._add_attempt(replan(latest), attempt=used + 1)
            else:
                continue
            requeued.append(run_id)
        return requeued

    def retry_failed(self) -> list[str]:
        """Give every run that has used up its attempts a fresh round of attempts; returns their ids."""
        retried = []
        for run_id, trials in self._trials_by_run().items():
            if {t.state for t in trials} & _SETTLED_OR_ACTIVE:
                continue
            self._add_attempt(replan(max(trials, key=lambda t: t.number)), attempt=1)
            retried.append(run_id)
        return retried

    def cancel(self, trial_id: int) -> bool:
        """Mark a pending or running attempt cancelled (failed, not counted as an attempt)."""
        try:
            self.storage.set_trial_user_attr(trial_id, "cancelled", True)
            self.storage.set_trial_user_attr(trial_id, "error", "cancelled by the user")
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def cancelled_attempts(self) -> dict[int, str | None]:
        """Every attempt cancelled by the user so far: trial id -> its Slurm job id (None if it had none)."""
        failed = self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        return {trial_id_of(t): t.user_attrs.get("job_id") for t in failed if t.user_attrs.get("cancelled")}

    def active_attempts(self) -> list[FrozenTrial]:
        """Pending and running attempts (for cancelling)."""
        return self.study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))

    def _fail_dead_workers(self, job_alive: JobAlive | None) -> None:
        # Not optuna.storages.fail_stale_trials: it fails every quiet trial at once, including
        # those whose requeued job is only waiting in the queue.
        host = socket.gethostname()
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        quiet = stale_heartbeats(self.storage, study_id_of(self.study), running)
        suspects: list[tuple[int, FrozenTrial, str]] = []
        for trial in running:
            trial_id, worker = trial_id_of(trial), trial.system_attrs.get("worker")
            if worker is None:
                lost = _lost_claim(trial, host)
                if lost is not None:
                    suspects.append((trial_id, trial, lost))
                continue
            if worker.get("host") == host and not pid_alive(worker.get("pid", -1)):
                suspects.append((trial_id, trial, f"worker process {worker.get('pid')} on {host} died"))
            elif trial_id in quiet:
                suspects.append((trial_id, trial, f"{quiet[trial_id]} from {worker}"))
        if not suspects:
            return
        job_ids = sorted({t.user_attrs["job_id"] for _, t, _ in suspects if t.user_attrs.get("job_id")})
        alive = dict(job_alive(job_ids)) if job_alive is not None and job_ids else {}
        for trial_id, trial, reason in suspects:
            job_id = trial.user_attrs.get("job_id")
            if job_alive is None or not job_id:
                self.fail(trial_id, reason)
            elif job_id not in alive:
                # Failing it could start a second job on the run beside one that comes back.
                log.warning(
                    "attempt %d (run %s): %s, but the scheduler could not say whether its job %s is alive; "
                    "leaving it running until the next recover can ask",
                    trial_id, trial.user_attrs.get("run_id"), reason, job_id,
                )
            elif alive[job_id]:
                log.info(
                    "attempt %d (run %s): %s, but its job %s is still queued or running (requeued?); leaving it running",
                    trial_id, trial.user_attrs.get("run_id"), reason, job_id,
                )
            else:
                self.fail(trial_id, f"{reason}; its job {job_id} has ended")

    def pending(self, run_ids: Sequence[str] | None = None) -> list[RunRecord]:
        wanted = set(run_ids) if run_ids is not None else None
        return [
            r for r in self.runs().values() if r.state == "pending" and (wanted is None or r.run_id in wanted)
        ]

    def set_job(self, trial_id: int, job_id: str, log_path: str) -> None:
        """Record where an attempt was dispatched (before it can finish: Optuna freezes finished trials).

        A running attempt that already has a job keeps it: only that job may take the attempt back
        after a requeue (`reclaim`), so a second dispatch of the same attempt never inherits it.
        """
        trial = self.storage.get_trial(trial_id)
        held_by = trial.user_attrs.get("job_id")
        if trial.state == TrialState.RUNNING and held_by not in (None, job_id):
            log.warning("attempt %d is running under job %s; not recording job %s for it", trial_id, held_by, job_id)
            return
        try:
            self.storage.set_trial_user_attr(trial_id, "job_id", job_id)
            self.storage.set_trial_user_attr(trial_id, "log_path", log_path)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("attempt %d finished before its job id %s was recorded", trial_id, job_id)

    # ---- worker side ---------------------------------------------------------------------
    def claim(self, trial_id: int, *, job_id: str | None = None, log_path: str | None = None) -> bool:
        """Atomically move a pending attempt to running; False if someone else has it (or it ended).

        `job_id`/`log_path`: the claiming job, recorded when it is not the job the attempt was
        dispatched in (a packed job that took a run of another job of its wave): the attempt's
        job is the one that trains it, for liveness, requeue, cancel and the log.

        Taking the attempt and recording this process as its worker are two writes: the process
        first records itself as a claimant, so that `recover` can tell an attempt whose claimant
        died between them (it has no worker to check and no heartbeat to go stale)."""
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        try:
            self.storage.set_trial_system_attr(trial_id, f"{CLAIMANT_PREFIX}{me['host']}:{me['pid']}", me)
            claimed = self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        if not claimed:
            return False
        try:
            self.storage.set_trial_system_attr(trial_id, "worker", me)
            record_heartbeat(self.storage, trial_id)
            if job_id is not None and self.storage.get_trial(trial_id).user_attrs.get("job_id") != job_id:
                self.storage.set_trial_user_attr(trial_id, "job_id", job_id)
                if log_path is not None:
                    self.storage.set_trial_user_attr(trial_id, "log_path", log_path)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.info("attempt %d was cancelled as it was claimed; not training it", trial_id)
            return False
        return True

    def confirm_job(self, trial_id: int, job_id: str | None, log_path: str | None) -> None:
        """The job training a running attempt records itself again as its job (see `claim`)."""
        if job_id is None or self.storage.get_trial(trial_id).user_attrs.get("job_id") == job_id:
            return
        try:
            self.storage.set_trial_user_attr(trial_id, "job_id", job_id)
            if log_path is not None:
                self.storage.set_trial_user_attr(trial_id, "log_path", log_path)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # cancelled meanwhile: its training stops at the next step
        else:
            log.warning("attempt %d was recorded under another job as it was claimed; job %s trains it", trial_id, job_id)

    def reclaim(self, trial_id: int, job_id: str) -> bool:
        """Take back a running attempt after Slurm requeued its job: True when the attempt is still
        running, was dispatched as `job_id` (Slurm never runs two lives of one job at once) and the
        process that held it is not alive on this host (another live process keeps it)."""
        trial = self.storage.get_trial(trial_id)
        if trial.state != TrialState.RUNNING or trial.user_attrs.get("job_id") != job_id:
            return False
        holder = trial.system_attrs.get("worker", {})
        if holder.get("host") == socket.gethostname() and holder.get("pid") != os.getpid() and pid_alive(
            int(holder.get("pid", -1))
        ):
            log.warning("attempt %d is held by live process %s on this host; job %s does not take it over",
                        trial_id, holder.get("pid"), job_id)
            return False
        self.storage.set_trial_system_attr(trial_id, "worker", {"host": socket.gethostname(), "pid": os.getpid()})
        self.storage.set_trial_user_attr(trial_id, "requeued", int(trial.user_attrs.get("requeued", 0)) + 1)
        record_heartbeat(self.storage, trial_id)
        log.info("attempt %d: job %s was requeued; resuming it", trial_id, job_id)
        return True

    def attempt_state(self, trial_id: int) -> str:
        """One attempt's state: "pending", "running", "complete", "failed" or "pruned"."""
        return state_name(self.storage.get_trial(trial_id).state)

    def attempt_states(self, trial_ids: Iterable[int]) -> dict[int, str]:
        """The states of several attempts (as `attempt_state`), read the cheaper way: a few, one by
        one, unless the study had few unfinished attempts at the last whole-study read (a driver
        following its wave: the wave is most of them); many, in one read of the whole study."""
        wanted = set(trial_ids)
        whole_study_is_cheap = (self._unfinished_seen is not None
                                and self._unfinished_seen <= _WHOLE_STUDY_PER_WANTED * len(wanted))
        if len(wanted) <= _FEW_ATTEMPTS and not whole_study_is_cheap:
            return {trial_id: self.attempt_state(trial_id) for trial_id in wanted}
        return {trial_id_of(t): state_name(t.state) for t in self._trials() if trial_id_of(t) in wanted}

    def trial_attrs(self, trial_id: int) -> dict[str, Any]:
        return self.storage.get_trial(trial_id).user_attrs

    def report_intermediate(self, trial_id: int, step: int, value: float) -> None:
        self.storage.set_trial_intermediate_value(trial_id, step, value)

    def complete(self, trial_id: int, *, value: float, results: dict[str, Any]) -> None:
        for key, item in results.items():
            self.storage.set_trial_user_attr(trial_id, key, item)
        self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, values=[value])

    def prune(self, trial_id: int, *, last_value: float | None, epoch: int) -> None:
        """The tuner's pruner stopped this run at `epoch`; it is final, not retried."""
        self.storage.set_trial_user_attr(trial_id, "pruned_at_epoch", epoch)
        self.storage.set_trial_state_values(
            trial_id, TrialState.PRUNED, values=[last_value] if last_value is not None else None
        )

    def fail(self, trial_id: int, error: str) -> None:
        self.storage.set_trial_user_attr(trial_id, "error", error)
        try:
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d had already finished; error not recorded as a new state", trial_id)

    def fail_pending(self, trial_id: int, error: str) -> bool:
        """Fail an attempt that no worker has claimed (a job that failed before claiming it);
        False, and nothing written, if it is running or finished."""
        if self.storage.get_trial(trial_id).state != TrialState.WAITING:
            return False
        self.fail(trial_id, error)
        return True

    def fail_unfinished(self, trial_id: int, error: str) -> bool:
        """Fail an attempt whose job ended without settling it (killed, cancelled while requeued)."""
        if self.storage.get_trial(trial_id).state not in (TrialState.WAITING, TrialState.RUNNING):
            return False
        self.fail(trial_id, error)
        return True

    def heartbeat(self, trial_id: int) -> Heartbeat:
        return Heartbeat(self.storage, trial_id)


__all__ = ["Ledger", "PlannedRun", "RunRecord", "storage_url_for"]
