"""Launching a sweep: plan, register in the ledger, dispatch what is not done, retry failures.

A sweep directory holds everything about one sweep (`sweeps.layout` names its files).
Launching again with the same spec skips completed runs, fails attempts whose worker died, and
retries failed runs until they have used `sweep.max_attempts`. On Slurm, an attempt whose worker
went quiet is failed only once Slurm says its job has ended: a requeued job waiting in the queue
keeps its attempt, and takes it back when it runs again.

Nothing is written before everything is checked: the spec, its plan, that no other driver holds
the directory, that a relaunch keeps the sweep's ledger and grid (other settings may change; the
earlier spec is kept beside the new one), that the ledger opens, and that a sweep whose ledger is
gone but whose runs finished is rebuilt first (`sweeps.rebuild`) rather than trained again.
SIGINT or SIGTERM to the driver cancels the active attempts (they do not count as attempts),
stops their workers and raises `SweepInterrupted`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from slurm.dispatch import Task, TaskOutcome, cpus_per_run, resolve_executor, run_tasks
from slurm.jobs import Requeueable
from slurm.liveness import slurm_jobs_alive
from sweeps import tuning
from sweeps.driver import DriverLock
from sweeps.layout import SweepLayout
from sweeps.ledger import Ledger, PlannedRun, RunRecord
from sweeps.packing import estimated_seconds, pack, runs_per_job
from sweeps.plan import plan_sweep
from sweeps.progress import SweepProgress
from sweeps.spec import MAX_RUNS, SweepSpec, load_spec
from sweeps.stopping import stop_active_attempts
from sweeps.storage import REBUILD_HINT, ledger_file
from sweeps.worker import Attempt, AttemptResult, WaveShare, execute_attempts

log = logging.getLogger(__name__)
POLL_PACKED_S = 2.0  # how often the driver reads the ledger for the runs that packed jobs finished
POLL_SHARE = 0.1  # ... and at most this share of its time (a large wave's ledger takes a while to read)
_SETTLED = ("complete", "failed", "pruned")


class SweepInterrupted(KeyboardInterrupt):
    """The driver was stopped by SIGINT or SIGTERM; its active attempts were cancelled."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class LaunchSummary:
    sweep_dir: Path
    planned: int
    skipped_complete: int  # already complete before this launch
    completed: int  # completed by this launch
    failed: list[RunRecord]  # out of attempts


def _identity(spec: SweepSpec, layout: SweepLayout) -> dict[str, object]:
    """What makes a sweep this sweep: its ledger, name, metric and the runs its grid defines."""
    return {
        "[ledger] url": layout.ledger_url(spec.ledger.url),
        "sweep.name": spec.sweep.name,
        "sweep.metric": spec.sweep.metric,
        "[axes]": spec.axes,
        "[base]": spec.base,
        "[design]": spec.design,
        "[tune]": spec.tune,
    }


def check_relaunch(spec_path: Path, spec: SweepSpec, layout: SweepLayout) -> bool:
    """Refuse a relaunch that would change an existing sweep's ledger or grid; True if the stored
    spec differs in other settings (it is then kept beside the new one). Writes nothing."""
    stored_path = layout.spec
    if not stored_path.exists() or stored_path.read_bytes() == spec_path.read_bytes():
        return False
    try:
        stored = load_spec(stored_path)
    except ValueError as exc:  # an unreadable stored spec must not lock the sweep: keep it beside
        log.warning("the stored spec %s does not load (%s); it will be kept beside the new one", stored_path, exc)
        return True
    old, new = _identity(stored, layout), _identity(spec, layout)
    changed = [key for key in old if old[key] != new[key]]
    if changed:
        diff = difflib.unified_diff(
            stored_path.read_text().splitlines(), spec_path.read_text().splitlines(),
            fromfile=str(stored_path), tofile=str(spec_path), lineterm="", n=1,
        )
        shown = "\n".join(list(diff)[:40])
        raise ValueError(
            f"{spec_path} changes {', '.join(changed)} of the sweep in {layout.root}, which would make it another "
            f"sweep; nothing was changed. Launch it into a new directory (--out), or relaunch with the stored spec "
            f"(`gr-scaling sweep resume {layout.root}`). Difference:\n{shown}"
        )
    return True


def _store_spec(spec_path: Path, layout: SweepLayout, keep_earlier: bool) -> None:
    copy = layout.spec
    if keep_earlier:
        earlier = layout.earlier_spec(copy.stat().st_mtime)
        copy.replace(earlier)
        log.info("the sweep's settings changed: the earlier spec is kept as %s", earlier)
    if not copy.exists() or copy.resolve() != spec_path.resolve():
        tmp = copy.with_name(copy.name + ".tmp")
        tmp.write_bytes(spec_path.read_bytes())
        tmp.replace(copy)  # atomic: a reader never sees half a spec


def _refuse_retraining(url: str, layout: SweepLayout) -> None:
    """A sweep whose ledger file is gone (or empty) but whose runs finished must be rebuilt, not
    retrained: a new empty ledger would queue every finished run again."""
    path = ledger_file(url)
    if path is None or (path.is_file() and path.stat().st_size > 0):
        return
    finished = layout.finished_results()
    if finished:
        state = "is empty" if path.exists() else "is missing"
        raise ValueError(
            f"the ledger {path} {state} but {len(finished)} run(s) of {layout.root} finished (runs/*/result.json); "
            f"launching would train them again. Rebuild the ledger from the run directories first: "
            f"`{REBUILD_HINT} {layout.root}`"
        )


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGINT) raise SweepInterrupted in the driver, so it can stop cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SweepInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch_sweep(spec_path: str | Path, sweep_dir: str | Path, *, max_runs: int | None = MAX_RUNS) -> LaunchSummary:
    """Run every planned run that is not complete yet; blocks until the sweep is done.

    Raises SweepInterrupted after a SIGINT/SIGTERM (active attempts cancelled, workers stopped),
    SweepBusy when another driver holds the directory, ValueError for a bad spec or relaunch.
    """
    spec_path, layout = Path(spec_path), SweepLayout(Path(sweep_dir))
    spec = load_spec(spec_path)  # validated in full before anything starts
    plan = plan_sweep(spec, max_runs=max_runs)  # max_runs: None with --allow-large
    for skip in plan.skipped:
        log.warning("design skipped %s: %s", skip.axis_values, skip.reason)
    planned = plan.within_budget()
    if len(planned) < len(plan.runs):
        log.warning(
            "budget %s: launching %d of %d planned runs (%.3e FLOPs); the next would exceed it",
            spec.budget, len(planned), len(plan.runs), sum(r.flops["train"] for r in planned),
        )
    keep_earlier = check_relaunch(spec_path, spec, layout)
    _refuse_retraining(layout.ledger_url(spec.ledger.url), layout)
    with DriverLock(layout.root):  # creates the directory; SweepBusy if another driver lives
        ledger = layout.open_ledger(spec, create=True)  # a bad [ledger] url fails here, before the spec is stored
        _store_spec(spec_path, layout, keep_earlier)
        with _signals_interrupt():
            try:
                return _launch(spec, layout, ledger, planned)
            except KeyboardInterrupt as exc:
                how = exc.args[0] if isinstance(exc, SweepInterrupted) and exc.args else "SIGINT"
                with _signals_ignored():
                    stopped = stop_active_attempts(ledger, on_slurm=resolve_executor(spec.dispatch) == "slurm")
                raise SweepInterrupted(
                    f"{how}: stopped; {stopped.running} running and {stopped.cancelled - stopped.running} pending "
                    f"attempt(s) cancelled (they do not count as attempts); continue with `gr-scaling sweep "
                    f"resume {layout.root}`"
                ) from None


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C while stopping must not leave attempts half cancelled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _launch(spec: SweepSpec, layout: SweepLayout, ledger: Ledger, planned: list[PlannedRun]) -> LaunchSummary:
    """Dispatch pending runs in waves until none is left; with [tune], each wave first asks the
    shapes' tuning studies for new values (the planned runs are then the shapes, not runs)."""
    studies = {}
    if spec.tune.enabled:
        studies = {
            shape.run_id: tuning.open_study(
                ledger.storage, spec.sweep.name, shape.run_id, spec.tune, maximize=spec.sweep.higher_is_better
            )
            for shape in planned
        }
        tuning.fail_orphans(ledger, studies)
        shape_ids = set(studies)
        in_sweep = lambda record: (record.tune or {}).get("shape") in shape_ids  # noqa: E731
    else:
        ledger.register(planned)
        plan_ids = {run.run_id for run in planned}
        in_sweep = lambda record: record.run_id in plan_ids  # noqa: E731
    before = [r for r in ledger.runs().values() if in_sweep(r)]
    already = sum(1 for r in before if r.state == "complete")
    log.info("%d runs registered, %d already complete", len(before), already)
    _say_what_stays_failed(before, spec, layout.root)
    progress = SweepProgress(
        total=len(before), complete=already, metric=spec.sweep.metric,
        to_run_flops=sum(r.flops.get("train", 0.0) for r in before if r.state != "complete"),
    )
    try:
        _run_waves(spec, layout, ledger, planned, studies, in_sweep, progress)
    finally:
        progress.close()

    after = [r for r in ledger.runs().values() if in_sweep(r)]
    done = sum(1 for r in after if r.state == "complete")
    failed = [r for r in after if r.state == "failed"]
    return LaunchSummary(
        sweep_dir=layout.root, planned=len(after), skipped_complete=already, completed=done - already, failed=failed
    )


def _say_what_stays_failed(records: list[RunRecord], spec: SweepSpec, sweep_dir: Path) -> None:
    """Runs that used all their attempts are not retried by a launch: say so, and what retries them."""
    spent = [r for r in records if r.state == "failed" and r.attempts >= spec.sweep.max_attempts]
    if spent:
        log.warning(
            "%d run(s) failed %d time(s) (sweep.max_attempts = %d) and are not retried by a launch: %s; give them "
            "a fresh round with `gr-scaling sweep retry-failed %s`, then `gr-scaling sweep resume %s`",
            len(spent), spec.sweep.max_attempts, spec.sweep.max_attempts,
            ", ".join(r.run_id for r in spent[:5]) + (", ..." if len(spent) > 5 else ""), sweep_dir, sweep_dir,
        )


def _run_waves(spec: SweepSpec, layout: SweepLayout, ledger: Ledger, planned: list[PlannedRun], studies: dict,
               in_sweep, progress: SweepProgress) -> None:  # type: ignore[no-untyped-def]
    # Local attempts have no scheduler to ask: their worker pid and heartbeat decide alone.
    executor = resolve_executor(spec.dispatch)
    job_alive = slurm_jobs_alive if executor == "slurm" else None
    cpus = cpus_per_run(spec.dispatch, executor)
    held = HeldRuns(spec, ledger, progress)
    while True:
        requeued = ledger.recover(max_attempts=spec.sweep.max_attempts, job_alive=job_alive)
        if requeued:
            log.info("retrying %d run(s): %s", len(requeued), ", ".join(requeued))
        if studies:
            room = max(spec.dispatch.max_parallel - len(ledger.pending()), 0)
            tuning.top_up(ledger, spec, planned, studies, room=room)
        pending = sorted(
            (r for r in ledger.pending() if in_sweep(r)), key=lambda r: r.flops.get("train", 0.0)
        )
        if not pending:
            running = [r for r in ledger.runs().values() if in_sweep(r) and r.state == "running"]
            if not running:
                break
            held.add(running)
            held.wait(in_sweep, job_alive)
            continue
        progress.total = max(progress.total, progress.done + progress.failed + len(pending))  # tuning adds runs
        _dispatch(spec, layout, ledger, pending, progress, cpus)
        held.report_settled()  # those that ended during the wave


class HeldRuns:
    """Runs of the sweep held by jobs this driver did not send: an earlier driver's, which died
    (killed, or its terminal closed) while its jobs ran on. Nothing is pending behind them, yet the
    sweep is not done: `wait` follows them until they end, reporting each as it ends, and checks
    their workers (`Ledger.recover`) every `RECOVER_S`, so a run whose job dies is failed, and with
    attempts left queued again: then `wait` returns for a wave to train it, and the runs still held
    are reported after it (`report_settled`). The ledger is read every `POLL_PACKED_S`."""

    RECOVER_S = 30.0  # on Slurm a recover asks squeue about every quiet attempt's job, and says so

    def __init__(self, spec: SweepSpec, ledger: Ledger, progress: SweepProgress) -> None:
        self.spec, self.ledger, self.progress = spec, ledger, progress
        self.records: dict[int, RunRecord] = {}  # held and not yet reported

    def add(self, records: list[RunRecord]) -> None:
        new = [r for r in records if r.trial_id not in self.records]
        if new:
            log.info("%d run(s) are still held by jobs this driver did not send (an earlier driver's): %s; "
                     "waiting for them", len(new), ", ".join(r.run_id for r in new[:5]) + (", ..." if len(new) > 5 else ""))
        for record in new:
            self.records[record.trial_id] = record
            self.progress.started()  # one job each, as far as this driver can tell

    def report_settled(self) -> bool:
        """Report the held runs that ended since the last look; True while any is still held."""
        if not self.records:
            return False
        states = self.ledger.attempt_states(list(self.records))
        for trial_id in sorted(t for t, state in states.items() if state in _SETTLED):
            record = self.records.pop(trial_id)
            self.progress.job_ended()
            attrs = self.ledger.trial_attrs(trial_id)
            job = TaskOutcome(key=(trial_id,), job_id=str(attrs.get("job_id")), ok=True, log_path=attrs.get("log_path"))
            _report(self.spec, self.ledger, self.progress, record, job, None)
        return bool(self.records)

    def wait(self, in_sweep, job_alive) -> None:  # type: ignore[no-untyped-def]
        """Until every held run has ended, or a run of the sweep is pending again."""
        next_recover = time.monotonic() + self.RECOVER_S
        while self.report_settled():
            time.sleep(max(self.spec.dispatch.poll_interval_s, POLL_PACKED_S))
            if time.monotonic() >= next_recover:
                next_recover = time.monotonic() + self.RECOVER_S
                self.ledger.recover(max_attempts=self.spec.sweep.max_attempts, job_alive=job_alive)
                if any(in_sweep(r) for r in self.ledger.pending()):
                    self.report_settled()
                    return


def _attempt(spec: SweepSpec, layout: SweepLayout, ledger: Ledger, record: RunRecord, cpus: int | None) -> Attempt:
    return Attempt(
        ledger_url=ledger.url, sweep_name=spec.sweep.name, trial_id=record.trial_id, layout=layout,
        metric=spec.sweep.metric, tracking=spec.tracking, tune=spec.tune if spec.tune.enabled else None,
        checkpoint_every=spec.dispatch.checkpoint_every_steps, cpus_per_run=cpus,
    )


def _dispatch(spec: SweepSpec, layout: SweepLayout, ledger: Ledger, pending: list[RunRecord],
              progress: SweepProgress, cpus: int | None) -> None:
    """One wave: the pending runs packed into jobs (`sweeps.packing`), each job a tuple of attempts
    and, when packed, the wave's runs it may take over once its own are done (`WaveShare`)."""
    seconds = {r.trial_id: estimated_seconds(r.flops.get("train", 0.0), spec.cost) for r in pending}
    per_job = runs_per_job(list(seconds.values()), spec.dispatch)
    jobs = pack(pending, lambda r: seconds[r.trial_id], per_job, min_jobs=spec.dispatch.max_parallel)
    share = None
    if per_job > 1:
        log.info("%d runs in %d jobs of up to %d runs (dispatch.runs_per_job = %s)", len(pending), len(jobs),
                 per_job, spec.dispatch.runs_per_job)
        longest_first = sorted(pending, key=lambda r: (-seconds[r.trial_id], r.trial_id))
        share = WaveShare(trial_ids=tuple(r.trial_id for r in longest_first),
                          until_s=0.5 * spec.dispatch.timeout_min * 60.0)
    tasks = [
        Task(key=tuple(r.trial_id for r in job),
             args=(tuple(_attempt(spec, layout, ledger, r, cpus) for r in job), share))
        for job in jobs
    ]
    follower = JobFollower(spec, ledger, progress, {record.trial_id: record for record in pending}, packed=per_job > 1)
    run_tasks(
        Requeueable(execute_attempts), tasks, config=spec.dispatch, folder=layout.jobs,
        on_submit=follower.submitted, on_done=follower.done, on_poll=follower.poll, job_name=f"gr-{spec.sweep.name}",
    )
    follower.wave_ended()


class JobFollower:
    """The driver's side of a wave's jobs: records where each was dispatched, and puts each run's
    end on the console, as the ledger has it, once. Runs of packed jobs end while their jobs go on
    (and a job may train a run dealt to another, `WaveShare`), so while packed jobs run the driver
    reads the ledger for the wave's settled runs (at most every `POLL_PACKED_S`, and for at most
    `POLL_SHARE` of its time); lone runs are reported as their jobs end."""

    def __init__(self, spec: SweepSpec, ledger: Ledger, progress: SweepProgress, records: dict[int, RunRecord], *,
                 packed: bool) -> None:
        self.spec, self.ledger, self.progress, self.records, self.packed = spec, ledger, progress, records, packed
        self.unreported = dict.fromkeys(sorted(records))  # in trial order: an ordered set
        self.dispatched: dict[int, TaskOutcome] = {}  # each run's job as dispatched (its own list)
        self.told: dict[int, tuple[TaskOutcome, AttemptResult]] = {}  # what the job that trained it said
        self.failed_jobs: list[TaskOutcome] = []
        self._next_poll = 0.0

    def submitted(self, task: Task, job_id: str, log_path: str) -> None:
        dispatched = TaskOutcome(key=task.key, job_id=job_id, ok=True, log_path=log_path)
        for trial_id in task.key:
            self.dispatched[trial_id] = dispatched
            if self.ledger.attempt_state(trial_id) == "pending":  # else a job of the wave took it already
                self.ledger.set_job(trial_id, job_id, log_path)
        self.progress.started()  # a job trains one run at a time

    def poll(self) -> None:
        if not self.packed or time.monotonic() < self._next_poll:
            return  # lone runs are reported as their jobs end
        began = time.monotonic()
        self._report_settled(self.unreported)
        took = time.monotonic() - began
        self._next_poll = time.monotonic() + max(POLL_PACKED_S, took * (1.0 / POLL_SHARE - 1.0))

    def done(self, outcome: TaskOutcome) -> None:
        results = outcome.result if outcome.ok and isinstance(outcome.result, list) else []
        for result in (r for r in results if isinstance(r, AttemptResult)):
            if not result.skipped:
                self.told[result.trial_id] = (outcome, result)
                if result.error is not None:  # the job said it failed: never left pending
                    self.ledger.fail_pending(result.trial_id, result.error)
            elif self.ledger.trial_attrs(result.trial_id).get("job_id") == outcome.job_id:
                _report_not_trained(self.records[result.trial_id], outcome)  # and no other job took it
                self.unreported.pop(result.trial_id, None)
        if not outcome.ok:
            self.failed_jobs.append(outcome)
            _settle_dead_job(self.ledger, outcome, self.records)
        self.progress.job_ended()
        # The runs this job was dealt and those it trained; runs it took from a job not yet
        # started are read by the (throttled) poll and at the wave's end.
        self._report_settled({*outcome.key, *(r.trial_id for r in results if isinstance(r, AttemptResult))})

    def wave_ended(self) -> None:
        """After the wave's last job: report what settled; if no job of the wave reached any of its
        runs (each died before its first claim), fail them, so that a job that cannot start is
        not sent out again and again. Runs left pending otherwise go to the next wave."""
        states = self.ledger.attempt_states(self.records)
        if self.failed_jobs and set(states.values()) == {"pending"}:
            first = self.failed_jobs[0]
            for trial_id in states:
                self.ledger.fail_unfinished(trial_id, f"job {first.job_id} ended without a result: {first.error}")
        self._report_settled(self.unreported)

    def _report_settled(self, trial_ids: Iterable[int]) -> None:
        """Report each of `trial_ids` that has settled (complete, failed or pruned) and was not yet."""
        states = self.ledger.attempt_states([t for t in trial_ids if t in self.unreported])
        for trial_id in sorted(t for t, state in states.items() if state in _SETTLED):
            outcome, result = self.told.get(trial_id) or (self._trained_by(trial_id), None)
            _report(self.spec, self.ledger, self.progress, self.records[trial_id], outcome, result)
            self.unreported.pop(trial_id)

    def _trained_by(self, trial_id: int) -> TaskOutcome:
        """The job the ledger says took the attempt (its own job may not have started yet: with
        more jobs than slots, a job that started takes the runs of one still waiting)."""
        attrs = self.ledger.trial_attrs(trial_id)
        dealt = self.dispatched.get(trial_id)
        if dealt is not None and attrs.get("job_id") in (None, dealt.job_id):
            return dealt
        return TaskOutcome(key=(trial_id,), job_id=str(attrs.get("job_id")), ok=True, log_path=attrs.get("log_path"))


def _settle_dead_job(ledger: Ledger, outcome: TaskOutcome, records: dict[int, RunRecord]) -> None:
    """A job that ended without a result (killed, crashed, cancelled while requeued): the attempt it
    was training (any run of the wave it had claimed: its own or one it took over) failed. Runs it
    never reached stay pending: another job of the wave or the next wave trains them."""
    running = [t for t, state in ledger.attempt_states(records).items() if state == "running"]
    for trial_id in running:
        if ledger.trial_attrs(trial_id).get("job_id") == outcome.job_id:
            ledger.fail_unfinished(trial_id, f"job {outcome.job_id} ended without a result: {outcome.error}")
    for trial_id in outcome.key:
        if ledger.attempt_state(trial_id) == "pending":
            log.info("run %s was not reached by job %s before it ended; it is dispatched again",
                     records[trial_id].run_id, outcome.job_id)
    log.debug("job %s failed; log: %s", outcome.job_id, outcome.log_path)


def _report_not_trained(record: RunRecord, outcome: TaskOutcome) -> None:
    log.warning("job %s did not train run %s: its attempt was taken or had ended (see %s)",
                outcome.job_id, record.run_id, outcome.log_path)


def _report(spec: SweepSpec, ledger: Ledger, progress: SweepProgress, record: RunRecord, outcome: TaskOutcome,
            result: AttemptResult | None) -> None:
    """One run's end on the driver's console, as the ledger has it now (a packed job that died
    may have completed some of its runs, failed one, and not reached the rest)."""
    if result is not None and result.skipped:
        _report_not_trained(record, outcome)
        return
    if result is not None and result.error is not None:
        ledger.fail_pending(record.trial_id, result.error)  # the job said it failed: never left pending
    trial = ledger.storage.get_trial(record.trial_id)
    state = ledger.attempt_state(record.trial_id)
    if state in ("pending", "running"):
        return  # not reached by its packed job (dispatched again), or still held by a requeued job
    if result is not None and result.wandb_fallback and not progress.wandb_told:
        progress.wandb_told = True
        progress.note(f"W&B: {result.wandb_fallback}")
    error = None if state == "complete" else "pruned by the tuner" if state == "pruned" else (
        trial.user_attrs.get("error") or outcome.error or "failed")
    progress.finished(
        run_id=record.run_id, axis_values=record.axis_values, flops=record.flops.get("train", 0.0),
        value=trial.value if state == "complete" else None,
        seconds=result.wall_time_s if result is not None else trial.user_attrs.get("wall_time_s"),
        ok=state == "complete", error=error,
        retrying=state == "failed" and record.attempts < spec.sweep.max_attempts,
    )
