"""What one dispatched job does: claim a ledger attempt, train, and write the result itself.

The job, not the driver, records its result, so a driver killed mid-sweep loses nothing that
finished. The claim (pending -> running) is atomic in the ledger, so an attempt runs at most once
even if two drivers dispatch it. The ledger is written before W&B is closed: W&B failing never
loses a result.

A job of several tasks trains one run in as many processes (rank 0 claims the attempt and writes
the ledger, the run directory and W&B). Runs checkpoint under `runs/<run id>/checkpoints/` every
`dispatch.checkpoint_every_steps` steps and when Slurm signals a timeout or preemption; the job
is then requeued under the same job id, takes its attempt back and resumes. A later attempt of
the same run (after a crash) resumes from the run's checkpoints too. They are deleted when the run
completes.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from gr_core.config import RunConfig
from sweeps.ledger import Ledger
from sweeps.spec import METRICS, TrackingConfig, TuneConfig
from sweeps.tracking import RunTracker
from slurm.jobs import current_job, export_distributed_env
from slurm.preemption import PreemptionWatch
from sweeps.tuning import TrialReporter

if TYPE_CHECKING:
    from gr_core.trainer import TrainResult

log = logging.getLogger(__name__)


def run_dir_for(sweep_dir: str | Path, run_id: str) -> Path:
    return Path(sweep_dir) / "runs" / run_id


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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


def spent_compute(planned: dict[str, Any], config: RunConfig, result: TrainResult) -> dict[str, Any]:
    """Training FLOPs and tokens actually spent: through the last epoch, and through the best one.

    Every epoch trains the same sequences (the Stochastic Length draw is fixed per run), so the
    FLOPs of e epochs are exactly e / epochs of the planned total; the tokens are counted by the
    trainer. An early-stopped run spends less than planned, and its reported metric (best
    validation epoch) stands for the compute up to that epoch: the x-axis of a fit.
    """
    epochs = config.train.epochs
    per_epoch = float(planned.get("train", 0.0)) / epochs
    tokens_per_epoch = float(planned.get("train_tokens", 0.0)) / epochs
    if tokens_per_epoch and abs(result.train_tokens - tokens_per_epoch * result.epochs_run) > 0.5:
        log.warning("run %s trained %d tokens in %d epochs; the plan says %.0f per epoch", config.run_id,
                    result.train_tokens, result.epochs_run, tokens_per_epoch)
    return {
        "flops": per_epoch * result.epochs_run,
        "tokens": result.train_tokens,
        "flops_at_best": per_epoch * result.best_epoch,
        "tokens_at_best": result.tokens_at_best,
        "flops_per_epoch": per_epoch,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
    }


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


def execute_attempt(
    storage_url: str,
    sweep_name: str,
    trial_id: int,
    sweep_dir: str,
    metric: str,
    tracking: TrackingConfig,
    tune: TuneConfig | None = None,
    checkpoint_every: int | None = None,
) -> dict[str, Any]:
    """Train the run behind ledger attempt `trial_id`; returns a short summary (on every task).

    A tuned run (user attr "tune") also reports each validation value to its Optuna tuning trial,
    whose pruner may stop it early: the attempt then ends "pruned", not failed.
    """
    from gr_core.distributed import join_on_device

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    place = export_distributed_env()
    ledger = Ledger(storage_url, sweep_name)
    # The run's config (fixed when it was planned) says where its processes compute, hence how
    # they join (NCCL on GPUs), before rank 0 claims the attempt.
    attrs = ledger.trial_attrs(trial_id)
    config = RunConfig.from_dict(attrs["config"], where=f"ledger trial {trial_id}")
    _, group = join_on_device(config.train.device)
    taken = False
    if group.is_main:
        taken = ledger.claim(trial_id) or (place.job_id is not None and ledger.reclaim(trial_id, place.job_id))
    if not group.any(taken):
        if group.is_main:
            _log_not_taken(ledger, trial_id, place.job_id)
        return {"trial_id": trial_id, "skipped": True}
    if not group.is_main:
        checkpoints = run_dir_for(sweep_dir, attrs["run_id"]) / "checkpoints"
        train_in_job(config, checkpoint_dir=checkpoints, checkpoint_every=checkpoint_every)
        return {"trial_id": trial_id, "run_id": attrs["run_id"], "rank": group.rank}
    run_id = attrs["run_id"]
    run_dir = run_dir_for(sweep_dir, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))

    tracker = RunTracker(
        tracking,
        directory=Path(sweep_dir),
        group=sweep_name,
        name=run_id,
        run_key=f"{run_id}-a{attrs.get('attempt', 1)}",
        config={**config.to_dict(), "flops": attrs.get("flops", {}), "params": attrs.get("params", {})},
    )
    if tracker.fallback is not None:  # the driver says so once (`sweeps.launch`)
        ledger.storage.set_trial_user_attr(trial_id, "wandb_fallback", tracker.fallback)

    maximize = METRICS[metric]
    links = attrs.get("tune")
    reporter = (
        TrialReporter(ledger.storage, links["study"], links["trial_id"], tune, maximize)
        if links is not None and tune is not None
        else None
    )
    last: dict[str, Any] = {"epoch": 0, "value": None}

    def on_eval(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log(metrics, step=epoch)
        value = metrics.get(f"val/{metric}")
        if value is None:
            return
        ledger.report_intermediate(trial_id, epoch, float(value))
        last.update(epoch=epoch, value=float(value))
        if reporter is not None and reporter.report(epoch, float(value)):
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric} {value:.4f} behind the median)")

    started = time.perf_counter()
    checkpoints = run_dir / "checkpoints"
    try:
        with ledger.heartbeat(trial_id):
            result = train_in_job(config, checkpoint_dir=checkpoints, checkpoint_every=checkpoint_every, on_eval=on_eval)
    except SystemExit:  # handed over for a requeue: the attempt stays running, its job comes back
        tracker.finish(exit_code=1)
        raise
    except KeyboardInterrupt:
        # Ctrl-C reaches the workers of a foreground driver too: the user stopped the sweep, so
        # the attempt is cancelled (rerun by `resume`, not counted), never failed.
        ledger.cancel(trial_id)
        if reporter is not None:
            reporter.finish(TrialState.FAIL)
        tracker.finish(exit_code=130)
        raise
    except optuna.TrialPruned as exc:
        ledger.prune(trial_id, last_value=last["value"], epoch=last["epoch"])
        if reporter is not None:
            reporter.finish(TrialState.PRUNED)
        tracker.finish()
        log.info("run %s %s", run_id, exc)
        return {"trial_id": trial_id, "run_id": run_id, "pruned": True}
    except BaseException as exc:
        detail = traceback.format_exc()
        (run_dir / "error.txt").write_text(detail)
        ledger.fail(trial_id, f"{type(exc).__name__}: {exc}")
        if reporter is not None:
            reporter.finish(TrialState.FAIL)
        tracker.finish(exit_code=1)
        raise
    wall = time.perf_counter() - started
    flops = attrs.get("flops", {})
    # The trainer's wall time covers training and its evaluation passes (and data generation), so
    # achieved FLOP/s counts the analytic matmul FLOPs of both; ledgers planned before evaluation
    # was counted (no "eval_total") fall back to training FLOPs alone. MFU is against the peak of
    # the device the run trained on, at its precision, times its processes (`run_peak_flops`).
    from scaling.hardware import mfu as model_flops_utilisation
    from scaling.measure import run_peak_flops

    executed = flops.get("train", 0.0) + flops.get("eval_total", 0.0)
    achieved = executed / result.wall_time_s if result.wall_time_s > 0 else 0.0
    peak, peak_source = run_peak_flops(
        result.device, config.train.precision, threads=config.train.num_threads, processes=group.world_size
    )
    utilisation = model_flops_utilisation(executed, result.wall_time_s, peak) if result.wall_time_s > 0 else 0.0
    spent = spent_compute(flops, config, result)
    best_val = result.metrics.get(f"val_{metric}")
    results = {
        # Test metrics at the best validation epoch of the sweep's metric (the trainer selects on
        # it: train.selection_metric), that epoch's validation values, the last evaluation's test
        # values ("final_<m>"), and the compute actually spent (`spent_compute`).
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "train_tokens": result.train_tokens,
        "spent": spent,
        "protocol": {
            "selection_metric": result.selection_metric,
            "eval_filter": config.train.eval_filter,
            "candidates": config.data.candidates,
        },
        "wall_time_s": wall,
        "train_time_s": result.wall_time_s,
        "achieved_flops_per_s": achieved,
        "mfu": utilisation,
        "peak_flops_per_s": peak,
        "peak_source": peak_source,
        "device": result.device,
        "precision": config.train.precision,
        "history": [{**h, "train_flops": spent["flops_per_epoch"] * h["epoch"]} for h in result.history],
    }
    if result.resumed_from_step is not None:
        results["resumed_from_step"] = result.resumed_from_step
    (run_dir / "result.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    ledger.complete(trial_id, value=float(result.metrics[metric]), results=results)
    shutil.rmtree(checkpoints, ignore_errors=True)
    if reporter is not None:
        reporter.finish(TrialState.COMPLETE, best_val)
    tracker.summary(
        {**result.metrics, "flops/train": flops.get("train"), "achieved_flops_per_s": achieved, "mfu": utilisation,
         "device": result.device}
    )
    tracker.finish()
    log.info("run %s complete: %s=%.4f in %.1f s", run_id, metric, result.metrics[metric], wall)
    return {"trial_id": trial_id, "run_id": run_id, metric: result.metrics[metric], "wall_time_s": wall,
            "wandb_fallback": tracker.fallback}
