"""What one planned run looks like in the ledger: the Optuna trial user attrs of each attempt, and
the `RunRecord` read back from them.

A planned run is identified by `run_id` (stable hash of its resolved config), kept as the trial's
user attr "run_id"; its config, axis values, FLOPs and params are user attrs too. Axis values stay
user attrs, not Optuna params: Optuna requires one fixed distribution per param name across a
study, which a spec edited between launches would break.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from sweeps.optuna_adapter import trial_id_of

_STATE_NAMES = {
    TrialState.WAITING: "pending",
    TrialState.RUNNING: "running",
    TrialState.COMPLETE: "complete",
    TrialState.FAIL: "failed",
    TrialState.PRUNED: "pruned",
}


def state_name(state: TrialState) -> str:
    """The ledger's word for an attempt's Optuna state."""
    return _STATE_NAMES[state]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PlannedRun:
    """What the planner hands the ledger: one grid point, resolved and costed."""

    run_id: str
    axis_values: dict[str, Any]
    config: dict[str, Any]
    flops: dict[str, Any]
    params: dict[str, int]
    tune: dict[str, Any] | None = None  # {"shape", "study", "trial_id"} of a tuned run (sweeps.tuning)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class RunRecord:
    """One planned run as the ledger sees it: its latest (or its completed) attempt."""

    run_id: str
    trial_id: int
    state: str  # pending | running | complete | failed | pruned
    attempts: int
    axis_values: dict[str, Any]
    config: dict[str, Any]
    flops: dict[str, Any]
    params: dict[str, int]
    metrics: dict[str, float]
    value: float | None
    error: str | None
    job_id: str | None
    log_path: str | None
    wall_time_s: float | None
    tune: dict[str, Any] | None = None
    requeued: int = 0  # times its job was requeued (timeout, preemption) and resumed
    # Compute a completed run actually spent (`sweeps.results.spent_compute`): "flops", "tokens"
    # (through the last epoch), "flops_at_best", "tokens_at_best" (through the reported epoch).
    # `flops` above is the plan. Empty for unfinished runs and ledgers written before it existed.
    spent: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Where a completed run's job spent its time (`sweeps.job_timing`); empty before it existed.
    timings: dict[str, Any] = dataclasses.field(default_factory=dict)


def to_record(trial: FrozenTrial, attempts: int) -> RunRecord:
    attrs = trial.user_attrs
    state = state_name(trial.state)
    if trial.state == TrialState.FAIL and attrs.get("cancelled"):
        state = "cancelled"
    return RunRecord(
        run_id=attrs["run_id"],
        trial_id=trial_id_of(trial),
        state=state,
        attempts=attempts,
        axis_values=attrs.get("axes", {}),
        config=attrs.get("config", {}),
        flops=attrs.get("flops", {}),
        params=attrs.get("params", {}),
        metrics=attrs.get("metrics", {}),
        value=trial.value if trial.state == TrialState.COMPLETE else None,
        error=attrs.get("error"),
        job_id=attrs.get("job_id"),
        log_path=attrs.get("log_path"),
        wall_time_s=attrs.get("wall_time_s"),
        tune=attrs.get("tune"),
        requeued=int(attrs.get("requeued", 0)),
        spent=attrs.get("spent", {}) if trial.state == TrialState.COMPLETE else {},
        timings=attrs.get("timings", {}) if trial.state == TrialState.COMPLETE else {},
    )


def attempt_attrs(run: PlannedRun, attempt: int) -> dict[str, Any]:
    """The user attrs of a new attempt of `run` (its `attempt`-th)."""
    return {
        "run_id": run.run_id,
        "attempt": attempt,
        "axes": run.axis_values,
        "config": run.config,
        "flops": run.flops,
        "params": run.params,
        **({"tune": run.tune} if run.tune is not None else {}),
    }


def attempt_number(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get("attempt", 1))


def replan(trial: FrozenTrial) -> PlannedRun:
    """The planned run behind an attempt, for its next attempt."""
    attrs = trial.user_attrs
    return PlannedRun(
        run_id=attrs["run_id"],
        axis_values=attrs.get("axes", {}),
        config=attrs["config"],
        flops=attrs.get("flops", {}),
        params=attrs.get("params", {}),
        tune=attrs.get("tune"),
    )
