"""Hyperparameter tuning per model size, so each point of a scaling curve is its size's best run.

With a `[tune]` table, every grid point of the spec is a *shape*; for each shape an Optuna study
(`<sweep>.tune.<shape id>`, in the sweep's ledger storage) samples the tuned parameter (e.g.
`train.lr`) with TPE or random search, and a pruner (median or ASHA) stops runs whose validation
metric falls behind at an evaluation epoch. Each sampled value is an ordinary ledger run (its own
run id, attempts, retries), linked to its Optuna trial by the user attrs "tune_study" and
"tune_trial_id". The scaling analysis then keeps, per shape, the completed run with the best
validation metric (`sweeps.status.completed_rows`). Tuning is sequential within a shape (TPE learns from the
finished trials), parallel across shapes.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeps.optuna_adapter import trial_id_of
from sweeps.spec import TuneConfig

log = logging.getLogger(__name__)


def study_name(sweep_name: str, shape_id: str) -> str:
    return f"{sweep_name}.tune.{shape_id}"


def make_sampler(tune: TuneConfig, shape_id: str) -> optuna.samplers.BaseSampler:
    seed = tune.seed + int(shape_id[:8], 16)  # distinct, reproducible streams per shape
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials)


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=1)
    if tune.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    return optuna.pruners.NopPruner()


def open_study(
    storage: optuna.storages.BaseStorage, sweep_name: str, shape_id: str, tune: TuneConfig, *, maximize: bool
) -> optuna.Study:
    return optuna.create_study(
        study_name=study_name(sweep_name, shape_id),
        storage=storage,
        sampler=make_sampler(tune, shape_id),
        pruner=make_pruner(tune),
        direction="maximize" if maximize else "minimize",
        load_if_exists=True,
    )


def trials_used(study: optuna.Study) -> int:
    """Trials that count towards the shape's budget: finished or still running (failed ones do not)."""
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=counted))


def ask(study: optuna.Study, tune: TuneConfig) -> tuple[optuna.Trial, float]:
    with warnings.catch_warnings():
        # The ledger storage has Optuna's heartbeat on for its run attempts; asked tuning trials
        # are watched through their linked runs instead, which Optuna warns about outside optimize().
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        trial = study.ask()
    value = trial.suggest_float(tune.param, tune.low, tune.high, log=tune.log)
    return trial, value


class TrialReporter:
    """Worker side: report validation values to the shape's tuning trial and ask its pruner."""

    def __init__(
        self, storage: optuna.storages.BaseStorage, study: str, trial_id: int, tune: TuneConfig, maximize: bool
    ) -> None:
        self._storage, self._tune_trial = storage, trial_id
        self._study = optuna.load_study(study_name=study, storage=storage, pruner=make_pruner(tune))
        self._maximize = maximize

    def _running(self) -> bool:
        # A retried run may find its tuning trial already finished (failed): then it only trains.
        return self._storage.get_trial(self._tune_trial).state == TrialState.RUNNING

    def report(self, epoch: int, value: float) -> bool:
        """Record the validation value; True when the pruner says stop."""
        if not self._running():
            return False
        self._storage.set_trial_intermediate_value(self._tune_trial, epoch, value)
        return self._study.pruner.prune(self._study, self._storage.get_trial(self._tune_trial))

    def finish(self, state: TrialState, value: float | None = None) -> None:
        if not self._running():
            return
        values = [value] if state == TrialState.COMPLETE and value is not None else None
        self._storage.set_trial_state_values(self._tune_trial, state, values=values)


def fail_orphans(ledger: Any, studies: dict[str, optuna.Study]) -> None:
    """Fail tuning trials left running by a driver that died between `ask` and registering the run."""
    linked = {
        (record.tune or {}).get("trial_id")
        for record in ledger.runs().values()
        if record.tune is not None
    }
    for study in studies.values():
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial_id_of(trial) not in linked:
                study.tell(trial.number, state=TrialState.FAIL)


def top_up(ledger: Any, spec: Any, shapes: list[Any], studies: dict[str, optuna.Study], *, room: int) -> int:
    """Ask each shape's study for new values until it has `tune.trials` or `room` new runs are queued.

    Each asked value becomes a ledger run (planned with exact FLOPs); returns how many were added.
    """
    from gr_core.config import RunConfig, replace_path
    from sweeps.plan import plan_run

    tune, added = spec.tune, 0
    name = tune.param.rpartition(".")[2]
    for shape in shapes:  # smallest FLOPs first
        study = studies[shape.run_id]
        while trials_used(study) < tune.trials and added < room:
            trial, value = ask(study, tune)
            config = replace_path(RunConfig.from_dict(shape.config), tune.param, value)
            run = plan_run(config, {**shape.axis_values, name: value})
            links = {"shape": shape.run_id, "study": study.study_name, "trial_id": trial_id_of(trial)}
            ledger.register([dataclasses.replace(run, tune=links)])
            added += 1
    return added
