"""Judge a fit by extrapolation: fit on the smaller runs, predict the largest, and choose a form.

`backtest` holds out the runs with the most training FLOPs (a fraction or a count; runs tied at
the threshold FLOPs, such as seed replicates, go together), fits a form on the rest and compares
its predictions with the held-out metrics: absolute and relative errors, and whether each held-out
run falls inside the prediction interval for one new run (a curve draw plus new-run noise with a
drawn SD, `FormFit.new_run_at`; the same calibrated interval the forecasts use). `choose_form`
picks the form with the smallest mean |relative error| on the held-out runs and reports AIC and
BIC beside it; without any backtest (too few runs) it falls back to AIC and says so. A form in
`excluded` (e.g. its forecast leaves the metric's range) is tabulated but never chosen.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.dataset import ScalingData
from analysis.forms import FormFit, fit_form

Array = npt.NDArray[np.float64]
DEFAULT_HOLDOUT = 0.2


def holdout_mask(flops: Array, holdout: float | int) -> npt.NDArray[np.bool_]:
    """True for the held-out (largest-FLOPs) runs; `holdout` is a fraction in (0, 1) or a count >= 1."""
    n = flops.size
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not math.isfinite(holdout):
        raise ValueError(f"holdout must be a fraction in (0, 1) or a run count >= 1, got {holdout!r}")
    if 0.0 < holdout < 1.0:
        count = max(1, int(round(holdout * n)))
    elif holdout >= 1 and float(holdout).is_integer():
        count = int(holdout)
    else:
        raise ValueError(f"holdout must be a fraction in (0, 1) or a whole run count >= 1, got {holdout!r}")
    if count >= n:
        raise ValueError(f"holdout of {count} run(s) leaves none of the {n} to fit on")
    threshold = np.sort(flops)[::-1][count - 1]
    mask = flops >= threshold
    if mask.all():
        raise ValueError("every run has the largest FLOPs: there are no smaller runs to fit on")
    return mask


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Backtest:
    form: str
    holdout: float | int
    threshold_flops: float
    n_train: int
    run_ids: tuple[str, ...]  # held out
    flops: Array
    observed: Array
    predicted: Array  # NaN when the form could not be fitted
    interval: tuple[Array, Array]  # prediction interval (one new run) at `level`
    level: float
    converged: bool
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def abs_err(self) -> Array:
        return self.predicted - self.observed

    @property
    def rel_err(self) -> Array:
        return (self.predicted - self.observed) / np.abs(self.observed)

    @property
    def mean_abs_rel_err(self) -> float:
        return float(np.mean(np.abs(self.rel_err))) if self.ok else math.nan

    @property
    def mean_abs_err(self) -> float:
        return float(np.mean(np.abs(self.abs_err))) if self.ok else math.nan

    @property
    def coverage(self) -> float:
        lo, hi = self.interval
        inside = (lo <= self.observed) & (self.observed <= hi)
        return float(np.mean(inside)) if self.ok and np.all(np.isfinite(lo)) else math.nan

    def to_dict(self) -> dict[str, Any]:
        nn = lambda v: float(v) if math.isfinite(v) else None  # noqa: E731
        lo, hi = self.interval
        return {
            "form": self.form,
            "holdout": self.holdout,
            "threshold_flops": self.threshold_flops,
            "n_train": self.n_train,
            "n_holdout": len(self.run_ids),
            "error": self.error,
            "converged": self.converged,
            "mean_abs_rel_err": nn(self.mean_abs_rel_err),
            "mean_abs_err": nn(self.mean_abs_err),
            "max_abs_rel_err": nn(float(np.max(np.abs(self.rel_err)))) if self.ok else None,
            "interval_coverage": nn(self.coverage),
            "level": self.level,
            "runs": [
                {"run_id": r, "flops": float(c), "observed": float(o), "predicted": nn(float(p)),
                 "abs_err": nn(float(p - o)), "rel_err": nn(float((p - o) / abs(o))),
                 "interval": [nn(float(a)), nn(float(b))]}
                for r, c, o, p, a, b in zip(self.run_ids, self.flops, self.observed, self.predicted, lo, hi)
            ],
        }


def prediction_interval(new_runs_SM: Array, level: float) -> tuple[Array, Array]:
    """Quantiles of simulated new runs (curve draw + noise each) -> (lo, hi) [M]; NaN with < 20 draws."""
    m = new_runs_SM.shape[1]
    if new_runs_SM.shape[0] < 20 or not np.all(np.isfinite(new_runs_SM)):
        return np.full(m, np.nan), np.full(m, np.nan)
    lo, hi = np.quantile(new_runs_SM, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def backtest(
    form: str, data: ScalingData, *, holdout: float | int = DEFAULT_HOLDOUT, n_bootstrap: int = 200,
    seed: int = 0, level: float = 0.95, flops_per_nd: float = 6.0,
) -> Backtest:
    """Fit `form` on all but the largest-FLOPs runs and predict those; fitting errors are recorded."""
    mask = holdout_mask(data.flops, holdout)
    train, test = data.subset(~mask), data.subset(mask)
    nan = np.full(test.y.size, np.nan)
    common = dict(form=form, holdout=holdout, threshold_flops=float(test.flops.min()), n_train=int(train.y.size),
                  run_ids=test.run_ids, flops=test.flops, observed=test.y, level=level)
    try:
        fitted = fit_form(form, train, n_bootstrap=n_bootstrap, seed=seed, level=level, flops_per_nd=flops_per_nd)
        predicted = fitted.predict(test)
    except ValueError as exc:
        return Backtest(predicted=nan, interval=(nan, nan), converged=False, error=str(exc), **common)
    interval = prediction_interval(fitted.new_run_at(test, np.random.default_rng(seed)), level)
    return Backtest(predicted=predicted, interval=interval, converged=fitted.converged, error=None, **common)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ModelChoice:
    chosen: str | None
    criterion: str
    reason: str
    table: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; a row keeps only what the comparison adds: each form's fit (label, convergence,
        AIC, BIC) and backtest (errors, coverage) are written once, under "fits" and "backtests"."""
        rows = [{k: row[k] for k in ("form", "delta_aic", "delta_bic", "candidate", "excluded")} for row in self.table]
        return dataclasses.asdict(self) | {"table": rows}


def choose_form(
    fits: Mapping[str, FormFit], backtests: Mapping[str, Backtest], candidates: Sequence[str] | None = None,
    excluded: Mapping[str, str] | None = None,
) -> ModelChoice:
    """The converged form with the smallest backtest mean |relative error|; AIC when none backtested.

    All `fits` are tabulated; only `candidates` (default: all) not in `excluded` (form -> why) can be chosen.
    """
    excluded = dict(excluded or {})
    converged = {k: f for k, f in fits.items() if f.converged}
    usable = {k: f for k, f in converged.items() if (candidates is None or k in candidates) and k not in excluded}
    if not usable:
        why = "no form could be fitted (or none converged)"
        if excluded:
            why += "; excluded: " + "; ".join(f"{k}: {v}" for k, v in excluded.items())
        return ModelChoice(chosen=None, criterion="none", reason=why, table=())
    aic_min = min(f.aic for f in converged.values())
    bic_min = min(f.bic for f in converged.values())
    table = []
    for name, f in fits.items():
        bt = backtests.get(name)
        table.append({
            "form": name, "label": f.form.label, "converged": f.converged, "n_params": f.n_params,
            "backtest_mean_abs_rel_err": bt.mean_abs_rel_err if bt is not None and bt.ok else None,
            "backtest_interval_coverage": bt.coverage if bt is not None and bt.ok else None,
            "aic": f.aic, "bic": f.bic,
            "delta_aic": f.aic - aic_min if name in converged else None,
            "delta_bic": f.bic - bic_min if name in converged else None,
            "candidate": name in usable,
            "excluded": excluded.get(name),
        })
    skipped = "".join(f"; {fits[k].form.label} not chosen: {why}" for k, why in excluded.items() if k in fits)
    scored = {k: backtests[k].mean_abs_rel_err for k in usable if k in backtests and backtests[k].ok}
    if scored:
        chosen = min(scored, key=lambda k: scored[k])
        reason = (f"{usable[chosen].form.label} predicts the held-out largest runs best (mean |relative error| "
                  f"{100 * scored[chosen]:.2f}%); AIC and BIC are listed beside it")
        if min(usable, key=lambda k: usable[k].aic) != chosen:
            reason += f", although AIC prefers {min(usable.values(), key=lambda f: f.aic).form.label} in-sample"
        return ModelChoice(chosen=chosen, criterion="backtest mean |relative error|", reason=reason + skipped,
                           table=tuple(table))
    chosen = min(usable, key=lambda k: usable[k].aic)
    return ModelChoice(chosen=chosen, criterion="AIC (no backtest was possible)",
                       reason=f"no form could be backtested, so the lowest AIC ({usable[chosen].form.label}) is used; "
                              "in-sample fit says little about extrapolation" + skipped, table=tuple(table))
