"""What one dispatched job does: claim a ledger attempt, track it, train, and record the result itself.

The job, not the driver, records its result, so a driver killed mid-sweep loses nothing that
finished. The claim (pending -> running) is atomic in the ledger, so an attempt runs at most once
even if two drivers dispatch it. The ledger is written before W&B is closed: W&B failing never
loses a result.

The driver sends a job one `Attempt` or several (which ledger, which trial, where the sweep lives,
how to track and tune): a packed job (`[dispatch] runs_per_job`, `sweeps.packing`) trains its runs
one after another in one process, each claimed, recorded, retried and checkpointed on its own; a
run that fails is recorded failed and the next one trains. Once its own runs are done it takes
runs of its wave that no job has started (`WaveShare`), so no slot idles while runs wait. After
a requeue the job starts its list again: the runs it recorded are skipped, the one it held is
taken back. The run itself (its resolved config, planned FLOPs and parameters) is read from the ledger,
where the planner put it: the config crosses the ledger once, as a dict, and becomes a `RunConfig`
here once, to train. The job returns an `AttemptResult` for the driver's progress display.

A job of several tasks trains one run in as many processes (rank 0 claims the attempt and writes
the ledger, the run directory and W&B). Runs checkpoint under `runs/<run id>/checkpoints/` every
`dispatch.checkpoint_every_steps` steps and when Slurm signals a timeout or preemption; the job
is then requeued under the same job id, takes its attempt back and resumes. A later attempt of
the same run (after a crash) resumes from the run's checkpoints too. They are deleted when the run
completes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from gr_core.config import RunConfig
from gr_core.threads import CPUS_PER_RUN_ENV
from slurm.jobs import JobPlace, current_job, export_distributed_env
from slurm.preemption import PreemptionWatch
from sweeps.job_timing import JobClock
from sweeps.layout import SweepLayout
from sweeps.ledger import Ledger
from sweeps.results import run_results
from sweeps.spec import METRICS, TrackingConfig, TuneConfig
from sweeps.tracking import RunTracker
from sweeps.tuning import TrialReporter

if TYPE_CHECKING:
    from gr_core.trainer import TrainResult

log = logging.getLogger(__name__)
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Attempt:
    """The driver's message to a job: run ledger attempt `trial_id` of the sweep in `layout`."""

    ledger_url: str
    sweep_name: str
    trial_id: int
    layout: SweepLayout
    metric: str  # sweep.metric: reported to the ledger (and the tuner) at every evaluation
    tracking: TrackingConfig
    tune: TuneConfig | None = None  # the sweep's [tune] when enabled
    checkpoint_every: int | None = None  # dispatch.checkpoint_every_steps
    # The CPUs each run of the job may use (train.num_threads = "auto" takes this many; None: the
    # job's Slurm allocation or affinity mask says): `slurm.dispatch.cpus_per_run`.
    cpus_per_run: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AttemptResult:
    """What a job tells the driver (every task returns one); the ledger holds the results."""

    trial_id: int
    run_id: str | None = None
    skipped: bool = False  # the attempt was taken by another job or had ended: nothing trained
    pruned: bool = False  # the tuner's pruner stopped it
    value: float | None = None  # the sweep's metric, when it completed
    error: str | None = None  # why it failed, for a run of a packed job (a lone run's job raises instead)
    wall_time_s: float | None = None
    wandb_fallback: str | None = None  # why W&B logs offline or not at all (the driver says it once)
    rank: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class LedgerRun:
    """The run behind an attempt, as the planner registered it in the ledger."""

    run_id: str
    attempt: int
    config: dict[str, Any]  # the resolved config (`RunConfig.to_dict()` at planning)
    flops: dict[str, Any]
    params: dict[str, Any]
    tune: dict[str, Any] | None  # {"shape", "study", "trial_id"} of a tuned run

    @classmethod
    def read(cls, ledger: Ledger, trial_id: int) -> LedgerRun:
        attrs = ledger.trial_attrs(trial_id)
        return cls(run_id=attrs["run_id"], attempt=int(attrs.get("attempt", 1)), config=attrs["config"],
                   flops=attrs.get("flops", {}), params=attrs.get("params", {}), tune=attrs.get("tune"))


def train_in_job(
    config: RunConfig,
    *,
    checkpoint_dir: str | Path | None,
    checkpoint_every: int | None = None,
    on_step: Any = None,
    on_eval: Any = None,
) -> TrainResult:
    """`train_run` inside a (possibly multi-task) job: resumes from and writes checkpoints under
    `checkpoint_dir`, and on Slurm's timeout/preemption signal checkpoints at the next step
    boundary and hands the job to submitit to requeue (the process then exits)."""
    from gr_core.trainer import CheckpointPolicy, TrainingInterrupted, train_run

    policy = (
        CheckpointPolicy(directory=Path(checkpoint_dir), every_steps=checkpoint_every)
        if checkpoint_dir is not None
        else None
    )
    with PreemptionWatch() as watch:
        try:
            return train_run(
                config, on_step=on_step, on_eval=on_eval, checkpoint=policy,
                interrupt=watch.requested if policy is not None else None,
            )
        except TrainingInterrupted as stopped:
            log.warning("%s; handing the job over to be requeued", stopped)
            watch.hand_over(is_main=current_job().rank == 0)
            raise  # not reached: hand_over ends the process


def train_job(config: dict[str, Any], checkpoint_dir: str | None, checkpoint_every: int | None = None) -> dict[str, Any]:
    """A job that trains one run outside a sweep (see `train_in_job`); returns its metrics, the
    loss of every step and the step it resumed from. Submit it as `slurm.jobs.Requeueable(train_job)`."""
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    export_distributed_env()
    losses: list[float] = []
    result = train_in_job(
        RunConfig.from_dict(config, where="train_job config"),
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        on_step=lambda step, logged: losses.append(logged["train/loss"]),
    )
    return {
        "metrics": result.metrics,
        "history": result.history,
        "losses": losses,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
    }


def _claim(ledger: Ledger, trial_id: int, place: JobPlace) -> bool:
    """Take a pending attempt (recording this job as its job), or take back the running one this
    job held before Slurm requeued it."""
    return ledger.claim(trial_id, job_id=place.job_id, log_path=place.log_path) or (
        place.job_id is not None and ledger.reclaim(trial_id, place.job_id)
    )


def _recorded_by(ledger: Ledger, trial_id: int, job_id: str | None) -> AttemptResult | None:
    """The result of an attempt this job completed before Slurm requeued it (a packed job starts
    its list again), as the ledger holds it; None otherwise."""
    trial = ledger.storage.get_trial(trial_id)
    if job_id is None or trial.user_attrs.get("job_id") != job_id or trial.state != TrialState.COMPLETE:
        return None
    log.info("attempt %d of run %s was recorded by this job before its requeue", trial_id, trial.user_attrs.get("run_id"))
    return AttemptResult(trial_id=trial_id, run_id=trial.user_attrs.get("run_id"), value=trial.value,
                         wall_time_s=trial.user_attrs.get("wall_time_s"))


def _log_not_taken(ledger: Ledger, trial_id: int, job_id: str | None) -> None:
    trial = ledger.storage.get_trial(trial_id)
    state = trial.state.name.lower()
    if job_id is not None and trial.user_attrs.get("job_id") == job_id:
        # This job's earlier life held the attempt; since then it was failed (a driver gave up on
        # it while the job waited in the queue, or the user cancelled it) and a newer attempt of
        # the run may be training from the same checkpoints: this job must not train beside it.
        log.warning(
            "job %s was requeued, but its attempt %d of run %s is %s now (%s): not training it; "
            "any retry of the run is a newer attempt",
            job_id, trial_id, trial.user_attrs.get("run_id"), state, trial.user_attrs.get("error") or "no error recorded",
        )
    else:
        log.info("attempt %d is already taken or finished (%s); nothing to do", trial_id, state)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class WaveShare:
    """The runs of a packed job's wave that it may take once its own are done: every run of the
    wave, longest (estimated) first; the job trains those still pending, one at a time, while it
    has run for less than `until_s` seconds (half its time limit, the budget packing fills).

    Packing deals runs to jobs by estimated time; the real times differ (evaluation, data, the
    machine), and without this the job that finishes first leaves its slot idle while another
    job still has runs queued. Taking the longest run still queued is longest-processing-time
    first at run time. The claim is atomic, so a run is trained once, by whichever job takes it."""

    trial_ids: tuple[int, ...]
    until_s: float


def execute_attempts(attempts: Sequence[Attempt], share: WaveShare | None = None) -> list[AttemptResult]:
    """A packed job: `execute_attempt` for each attempt in turn, in this one process, then (with
    `share`) the runs of its wave that no job has taken yet.

    A run that fails is recorded failed (by its attempt, or here when it failed before its claim)
    and reported in its `AttemptResult.error`; the next run trains. Ctrl-C, a cancel and a requeue
    (SystemExit) stop the job as they stop a lone run, and so does an error that leaves the
    process unusable (a CUDA fault) or a ledger the job cannot open: the driver then settles the
    job's runs. A preemption or time-limit signal that comes between two runs (after a run's last
    step) hands the job over before the next run starts. A job of one attempt and no share behaves
    as a lone run: its failure fails the job. The results: one per attempt of the job's own list,
    and one per run of the share that it trained.
    """
    if len(attempts) == 1 and share is None:
        return [execute_attempt(attempts[0])]
    if current_job().world_size > 1:
        raise ValueError("a packed job trains runs of one process each; this job has several tasks")
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    started = time.monotonic()
    ledger = Ledger(attempts[0].ledger_url, attempts[0].sweep_name)
    results: list[AttemptResult] = []
    own = {attempt.trial_id for attempt in attempts}
    job_id = current_job().job_id
    with PreemptionWatch() as between_runs:
        for attempt in attempts:
            results.append(_packed_attempt(attempt, ledger, between_runs, first_in_process=not results))
        for trial_id in share.trial_ids if share is not None else ():
            if trial_id in own:
                continue
            state = ledger.attempt_state(trial_id)
            # A run this job took from another's list before Slurm requeued it: take it back.
            held = state == "running" and job_id is not None and ledger.trial_attrs(trial_id).get("job_id") == job_id
            if state != "pending" and not held:
                continue
            if not held and time.monotonic() - started >= share.until_s:
                log.info("the job has run %.0f s (half its time limit): it takes no more runs of its wave",
                         time.monotonic() - started)
                continue  # still looks for a run it held before a requeue
            result = _packed_attempt(dataclasses.replace(attempts[0], trial_id=trial_id), ledger, between_runs,
                                     first_in_process=False)
            if not result.skipped:  # another job took it first
                log.info("took run %s of another job of the wave (its own runs were done)", result.run_id)
                results.append(result)
    return results


def _packed_attempt(attempt: Attempt, ledger: Ledger, between_runs: PreemptionWatch, *,
                    first_in_process: bool) -> AttemptResult:
    """One run of a packed job; its failure is recorded and returned, not raised, unless it leaves
    the process unusable."""
    if between_runs.requested():
        log.warning("signalled between runs: handing the job over before attempt %d", attempt.trial_id)
        between_runs.hand_over(is_main=True)
    try:
        return execute_attempt(attempt, ledger=ledger, first_in_process=first_in_process)
    except Exception as exc:
        if _poisons_process(exc):
            raise
        error = f"{type(exc).__name__}: {exc}"
        log.exception("attempt %d failed; the job goes on with its next run", attempt.trial_id)
        # It failed before its claim (a claimed attempt records its own failure): fail it only if
        # it is still pending; running, it may be another job's.
        if ledger.fail_pending(attempt.trial_id, error):
            log.warning("attempt %d recorded failed before it trained: %s", attempt.trial_id, error)
        return AttemptResult(trial_id=attempt.trial_id, run_id=_run_id(ledger, attempt), error=error)


def _poisons_process(exc: BaseException) -> bool:
    """Errors after which no later run of this process can train (a device-side CUDA fault)."""
    return type(exc).__name__ == "AcceleratorError" or "CUDA error" in str(exc)


def _run_id(ledger: Ledger, attempt: Attempt) -> str | None:
    try:
        return ledger.trial_attrs(attempt.trial_id).get("run_id")
    except Exception:  # noqa: BLE001 - only for the report; the failure itself is what matters
        return None


def execute_attempt(attempt: Attempt, *, ledger: Ledger | None = None, first_in_process: bool = True) -> AttemptResult:
    """Run `attempt` in this job: claim it (rank 0), train it on every task, record it (rank 0).

    A tuned run also reports each validation value to its Optuna tuning trial, whose pruner may
    stop it early: the attempt then ends "pruned", not failed. `ledger`: an open one to reuse (a
    packed job's); `first_in_process`: whether this process started up for this attempt.
    """
    clock = JobClock(first_in_process=first_in_process)
    from gr_core.distributed import join_on_device  # torch, on the job's first attempt

    clock.mark("imports")
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    place = export_distributed_env()
    if attempt.cpus_per_run is not None:
        os.environ[CPUS_PER_RUN_ENV] = str(attempt.cpus_per_run)  # read by `gr_core.threads`
    ledger = Ledger(attempt.ledger_url, attempt.sweep_name) if ledger is None else ledger
    run = LedgerRun.read(ledger, attempt.trial_id)
    # The run's config (fixed when it was planned) says where its processes compute, hence how
    # they join (NCCL on GPUs), before rank 0 claims the attempt.
    config = RunConfig.from_dict(run.config, where=f"ledger trial {attempt.trial_id}")
    _, group = join_on_device(config.train.device)
    taken = group.is_main and _claim(ledger, attempt.trial_id, place)
    if not group.any(taken):
        if group.is_main:
            earlier = _recorded_by(ledger, attempt.trial_id, place.job_id)
            if earlier is not None:
                return earlier
            _log_not_taken(ledger, attempt.trial_id, place.job_id)
        return AttemptResult(trial_id=attempt.trial_id, skipped=True)
    if not group.is_main:
        checkpoints = attempt.layout.run(run.run_id).checkpoints
        train_in_job(config, checkpoint_dir=checkpoints, checkpoint_every=attempt.checkpoint_every)
        return AttemptResult(trial_id=attempt.trial_id, run_id=run.run_id, rank=group.rank)
    clock.mark("claim")
    claimed = ClaimedAttempt(attempt, ledger, run, config, processes=group.world_size, clock=clock)
    # The driver records each job's runs as it submits it; a submission that raced this claim may
    # have written its own job over this one's, so the job that trains the run says so again now.
    ledger.confirm_job(attempt.trial_id, place.job_id, place.log_path)
    return claimed.execute()


class ClaimedAttempt:
    """Rank 0's steps for an attempt it holds: prepare (on construction: the run directory with its
    config, W&B, the tuning trial), then `execute`: train, and settle the attempt.

    Every way training ends settles the attempt: complete (result.json, then the ledger, then
    W&B), pruned by the tuner, cancelled (Ctrl-C: not counted as an attempt), failed (any error:
    error.txt and the ledger), or left running (SystemExit: the job was handed over to Slurm to
    requeue, and comes back for it).
    """

    def __init__(self, attempt: Attempt, ledger: Ledger, run: LedgerRun, config: RunConfig, *, processes: int,
                 clock: JobClock | None = None) -> None:
        self.attempt, self.ledger, self.run, self.config, self.processes = attempt, ledger, run, config, processes
        self.clock = JobClock() if clock is None else clock
        self.last_epoch = 0  # the latest evaluation of the sweep's metric on validation, and its value
        self.last_value: float | None = None
        self.files = attempt.layout.run(run.run_id)
        self.files.path.mkdir(parents=True, exist_ok=True)
        self.files.config.write_text(json.dumps(run.config, indent=2, sort_keys=True))  # as the ledger holds it
        self.tracker = RunTracker(
            attempt.tracking, directory=attempt.layout.root, group=attempt.sweep_name, name=run.run_id,
            run_key=f"{run.run_id}-a{run.attempt}", config={**run.config, "flops": run.flops, "params": run.params},
        )
        if self.tracker.fallback is not None:  # the driver says so once (`sweeps.launch`)
            ledger.storage.set_trial_user_attr(attempt.trial_id, "wandb_fallback", self.tracker.fallback)
        self.tuning = (
            TrialReporter(ledger.storage, run.tune["study"], run.tune["trial_id"], attempt.tune, METRICS[attempt.metric])
            if run.tune is not None and attempt.tune is not None
            else None
        )
        self.clock.mark("tracker")

    def execute(self) -> AttemptResult:
        tracker, trial_id = self.tracker, self.attempt.trial_id
        started = time.perf_counter()
        try:
            with self.ledger.heartbeat(trial_id):
                result = train_in_job(self.config, checkpoint_dir=self.files.checkpoints,
                                      checkpoint_every=self.attempt.checkpoint_every, on_eval=self._on_eval)
        except SystemExit:  # handed over for a requeue: the attempt stays running, its job comes back
            tracker.finish(exit_code=1)
            raise
        except KeyboardInterrupt:
            # Ctrl-C reaches the workers of a foreground driver too: the user stopped the sweep, so
            # the attempt is cancelled (rerun by `resume`, not counted), never failed.
            self.ledger.cancel(trial_id)
            self._finish_tuning(TrialState.FAIL)
            tracker.finish(exit_code=130)
            raise
        except optuna.TrialPruned as exc:
            self.ledger.prune(trial_id, last_value=self.last_value, epoch=self.last_epoch)
            self._finish_tuning(TrialState.PRUNED)
            tracker.finish()
            log.info("run %s %s", self.run.run_id, exc)
            return AttemptResult(trial_id=trial_id, run_id=self.run.run_id, pruned=True)
        except BaseException as exc:
            self.files.error.write_text(traceback.format_exc())
            self.ledger.fail(trial_id, f"{type(exc).__name__}: {exc}")
            self._finish_tuning(TrialState.FAIL)
            tracker.finish(exit_code=1)
            raise
        self.clock.mark("train_call")
        return self._record(result, wall_time_s=time.perf_counter() - started)

    def _on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        """Each evaluation: W&B, the ledger's intermediate value and the tuner, whose pruner may stop the run."""
        self.tracker.log(metrics, step=epoch)
        value = metrics.get(f"val/{self.attempt.metric}")
        if value is None:
            return
        self.ledger.report_intermediate(self.attempt.trial_id, epoch, float(value))
        self.last_epoch, self.last_value = epoch, float(value)
        if self.tuning is not None and self.tuning.report(epoch, float(value)):
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.attempt.metric} {value:.4f} behind the median)")

    def _finish_tuning(self, state: TrialState, value: float | None = None) -> None:
        if self.tuning is not None:
            self.tuning.finish(state, value)

    def _record(self, result: TrainResult, *, wall_time_s: float) -> AttemptResult:
        """result.json first, then the ledger (the durable record), then the tuner and W&B."""
        metric, run, tracker = self.attempt.metric, self.run, self.tracker
        results = run_results(run.flops, self.config, result, run_id=run.run_id, wall_time_s=wall_time_s,
                              processes=self.processes)
        self.clock.mark("record")  # so far: the document; sealed with the timings, then written
        results["timings"] = self.clock.timings(result.phase_s)
        self.files.result.write_text(json.dumps(results, indent=2, sort_keys=True))
        self.ledger.complete(self.attempt.trial_id, value=float(result.metrics[metric]), results=results)
        shutil.rmtree(self.files.checkpoints, ignore_errors=True)
        self._finish_tuning(TrialState.COMPLETE, result.metrics.get(f"val_{metric}"))
        tracker.summary({**result.metrics, "flops/train": run.flops.get("train"),
                         "achieved_flops_per_s": results["achieved_flops_per_s"], "mfu": results["mfu"],
                         "device": result.device})
        tracker.finish()
        log.info("run %s complete: %s=%.4f in %.1f s", run.run_id, metric, result.metrics[metric], wall_time_s)
        return AttemptResult(trial_id=self.attempt.trial_id, run_id=run.run_id, value=result.metrics[metric],
                             wall_time_s=wall_time_s, wandb_fallback=tracker.fallback)


__all__ = [
    "Attempt", "AttemptResult", "ClaimedAttempt", "LedgerRun", "WaveShare", "execute_attempt", "execute_attempts",
    "train_in_job", "train_job",
]
