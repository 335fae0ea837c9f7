"""The whole analysis of one metric: every form, backtests, model choice, frontier, forecast.

`run_study` is what `gr-scaling fit`, `report` and `forecast` run on a sweep's runs or a CSV. A
form that cannot be fitted (too few runs, no N and D for the two-variable law, y <= 0 for the
log-space form) is recorded with its reason and the rest go on; nothing here raises for thin
data, only for bad options.

Which curve answers the forecast: with `form="auto"`, the one-variable form (in C) that predicts
the held-out largest runs best, among those whose point forecast stays inside the metric's range
(`analysis.bounds`: a log-linear NDCG that passes 1 at 100x is flagged and not chosen). A form
fitted in (N, D) (the two-variable law) is a candidate only when asked for by name
(`form="chinchilla"`), because its curve in C is the metric at the compute-optimal (N, D), a
different question from "what will the next run of this sweep's shape reach".

The frontier's k in C = k N D defaults to "auto": the runs' own median C / (N D) (HSTU's exact
FLOPs are about 9.9 N D on the ML-100K config, not 6 N D), so N_opt and D_opt are on the same
x-axis as the fits; `to_dict()["flops_per_nd"]` says which k was used and where it came from.

`Study.to_dict()` holds each result once: the metric, its direction and range, and k at the top,
each form's fit under "fits", its backtest under "backtests", and the model choice only what the
comparison adds (`analysis.backtest.ModelChoice.to_dict`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from analysis.backtest import DEFAULT_HOLDOUT, Backtest, ModelChoice, backtest, choose_form
from analysis.dataset import ScalingData
from analysis.forecast import Forecast, forecast
from analysis.bounds import metric_bounds
from analysis.forms import FORM_NAMES, FORMS, FormFit, fit_form
from analysis.frontier import DEFAULT_FLOPS_PER_ND, Frontier, compute_frontier
from analysis.isoflop import DEFAULT_REL_TOL, IsoFlopResult, fit_isoflop
from analysis.progress import track
from analysis.inputs import validate_level
from scaling.cost import CostInputs

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class StudyOptions:
    form: str = "auto"  # the forecast's curve: "auto" or one of FORM_NAMES
    holdout: float | int = DEFAULT_HOLDOUT
    n_bootstrap: int = 500
    backtest_bootstrap: int = 200
    seed: int = 0
    level: float = 0.95
    flops_per_nd: float | str = "auto"  # k in C = k N D, or "auto": the runs' median C / (N D)
    forecast_at: tuple[float, ...] = ()  # default: 10x and 100x the largest run
    targets: tuple[float, ...] = ()
    cost: CostInputs | None = dataclasses.field(default_factory=CostInputs)
    isoflop_rel_tol: float = DEFAULT_REL_TOL

    def __post_init__(self) -> None:
        if self.form != "auto" and self.form not in FORM_NAMES:
            raise ValueError(f"form must be 'auto' or one of {list(FORM_NAMES)}, got {self.form!r}")
        validate_level(self.level)
        k = self.flops_per_nd
        if k != "auto" and (isinstance(k, (bool, str)) or not (isinstance(k, (int, float)) and 0 < k < float("inf"))):
            raise ValueError(f"flops_per_nd must be a positive number (6 for C = 6ND) or 'auto', got {k!r}")
        h = self.holdout
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not (0 < h < 1 or (h >= 1 and float(h).is_integer())):
            raise ValueError(f"holdout must be a fraction in (0, 1) or a whole run count >= 1, got {h!r}")
        for name in ("n_bootstrap", "backtest_bootstrap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Study:
    data: ScalingData
    options: StudyOptions
    fits: dict[str, FormFit]
    errors: dict[str, str]  # form -> why it could not be fitted
    backtests: dict[str, Backtest]
    backtest_error: str | None
    choice: ModelChoice
    forecast_form: str | None
    forecast: Forecast | None
    forecast_error: str | None
    frontier: Frontier | None
    isoflop: IsoFlopResult | None
    notes: tuple[str, ...]
    flops_per_nd_source: str = ""  # where the frontier's k came from

    def to_dict(self) -> dict[str, Any]:
        # k is "flops_per_nd" below; the cost inputs are in the forecast's "next_10x" when it has one.
        opts = {k: v for k, v in dataclasses.asdict(self.options).items()
                if k != "flops_per_nd" and not (k == "cost" and self.forecast and self.forecast.next_10x)}
        # The forecast's form, the metric's direction and range are stated once, here.
        fc = None if self.forecast is None else {k: v for k, v in self.forecast.to_dict().items()
                                                 if k not in ("form", "higher_is_better", "bounds")}
        return {
            "metric": self.data.metric,
            "higher_is_better": self.data.higher_is_better,
            "bounds": metric_bounds(self.data.metric).to_dict(),
            "n_runs": int(self.data.y.size),
            "has_n_and_d": self.data.has_nd,
            "n_and_d_missing": self.data.nd_missing or None,
            "replicate_groups": self.data.n_replicated_groups,
            "bootstrap_unit": "replicate group (config)" if self.data.groups is not None else "run",
            "options": opts,
            "flops_per_nd": {"value": self.options.flops_per_nd, "source": self.flops_per_nd_source},
            "fits": {k: f.to_dict() for k, f in self.fits.items()},
            "fit_errors": dict(self.errors),
            "backtests": {k: b.to_dict() for k, b in self.backtests.items()},
            "backtest_error": self.backtest_error,
            "model_choice": self.choice.to_dict(),
            "forecast_form": self.forecast_form,
            "forecast": fc,
            "forecast_error": self.forecast_error,
            "frontier": None if self.frontier is None else self.frontier.to_dict(),
            "frontier_table": None if self.frontier is None else self.frontier.table(self._budgets()),
            "isoflop": None if self.isoflop is None else self.isoflop.to_dict(),
            "notes": list(self.notes),
        }

    def _budgets(self) -> np.ndarray:
        top = float(self.data.flops.max())
        return np.array([top, 10 * top, 100 * top])


def _resolve_flops_per_nd(data: ScalingData, requested: float | str, notes: list[str]) -> tuple[float, str]:
    """k for the frontier and where it came from; "auto" takes the runs' median C / (N D).

    Notes a given k the runs contradict (outside 0.8-1.25x of their median).
    """
    if not data.has_nd:
        if requested == "auto":
            return DEFAULT_FLOPS_PER_ND, f"default {DEFAULT_FLOPS_PER_ND:g} (no N and D per run to take it from)"
        return float(requested), "given (--flops-per-nd)"
    n, d = data.require_nd("compare FLOPs with N D")
    ratio = data.flops / (n * d)
    median = float(np.median(ratio))
    if requested == "auto":
        source = (f"the runs' median C / (N D) over {ratio.size} runs (range {ratio.min():.3g} to {ratio.max():.3g})")
        notes.append(f"frontier uses C = k N D with k = {median:.4g}, {source}")
        return median, source
    k = float(requested)
    if not 0.8 <= median / k <= 1.25:
        notes.append(f"the runs' FLOPs are C = k N D with k from {ratio.min():.3g} to {ratio.max():.3g} (median "
                     f"{median:.3g}), not the frontier's k = {k:g}: N_opt and D_opt refer to C = {k:g} N D; "
                     "pass --flops-per-nd auto (or the k of your convention) to match the x-axis")
    return k, f"given (--flops-per-nd); the runs' median C / (N D) is {median:.4g}"


def _out_of_bounds(fits: dict[str, FormFit], at: np.ndarray) -> dict[str, str]:
    """Forms whose point forecast at the budgets `at` leaves the metric's range -> why."""
    out = {}
    for name, f in fits.items():
        curve = f.curve()
        inside = curve.in_bounds(at)
        if not inside.all():
            values = curve.values(curve.point[None, :], at)[0]
            out[name] = (f"its forecast leaves the metric's range {f.bounds.text()} ({f.bounds.why}): "
                         + ", ".join(f"{v:.4g} at {c:.3g} FLOPs" for c, v, ok in zip(at, values, inside) if not ok))
    return out


def run_study(data: ScalingData, options: StudyOptions | None = None) -> Study:
    opts = options or StudyOptions()
    notes: list[str] = []
    k, k_source = _resolve_flops_per_nd(data, opts.flops_per_nd, notes)
    opts = dataclasses.replace(opts, flops_per_nd=k)
    forms = [name for name, form in FORMS.items() if data.has_nd or not form.needs_nd]
    errors = {name: f"no N and D per run ({data.nd_missing or 'not given'})" for name in FORMS if name not in forms}
    fits: dict[str, FormFit] = {}
    for name in track(forms, desc=f"fitting {data.metric} ({opts.n_bootstrap} bootstrap draws)", unit="form",
                      label=str):
        try:
            fits[name] = fit_form(name, data, n_bootstrap=opts.n_bootstrap, seed=opts.seed, level=opts.level,
                                  flops_per_nd=opts.flops_per_nd)
        except ValueError as exc:
            errors[name] = str(exc)
            log.warning("no %s fit for %s: %s", name, data.metric, exc)
    for name, f in fits.items():
        if not f.converged:
            notes.append(f"the {name} fit did NOT converge: {f.message}")

    backtests: dict[str, Backtest] = {}
    backtest_error = None
    try:
        for name in track(list(fits), desc=f"backtesting {data.metric} ({opts.backtest_bootstrap} bootstrap draws)",
                          unit="form", label=str):
            backtests[name] = backtest(name, data, holdout=opts.holdout, n_bootstrap=opts.backtest_bootstrap,
                                       seed=opts.seed, level=opts.level, flops_per_nd=opts.flops_per_nd)
    except ValueError as exc:  # the holdout leaves nothing to fit on
        backtest_error = str(exc)
        backtests = {}
    candidates = [opts.form] if opts.form != "auto" else [name for name, form in FORMS.items() if not form.needs_nd]
    top = float(data.flops.max())
    at = np.asarray(opts.forecast_at or (10 * top, 100 * top), np.float64)
    leaving = _out_of_bounds({k: f for k, f in fits.items() if f.converged}, at)
    notes += [f"the {name} form is flagged: {why}" for name, why in leaving.items()]
    # A form asked for by name is still used (its forecast is clipped and flagged); "auto" avoids it.
    choice = choose_form(fits, backtests, candidates=candidates, excluded=leaving if opts.form == "auto" else None)

    frontier = isoflop = None
    if "chinchilla" in fits:
        frontier = compute_frontier(fits["chinchilla"].fit, opts.flops_per_nd)
    if data.has_nd:
        isoflop = fit_isoflop(data, rel_tol=opts.isoflop_rel_tol, level=opts.level)

    fc = fc_error = None
    fc_form = choice.chosen
    if fc_form is None:
        fc_error = (f"the requested form {opts.form!r} could not be fitted: {errors.get(opts.form, 'did not converge')}"
                    if opts.form != "auto" else f"no one-variable form could be used: {choice.reason}")
    else:
        try:
            fc = forecast(fits[fc_form].curve(), form=fc_form, max_observed_flops=top, at_flops=at,
                          targets=opts.targets, cost_inputs=opts.cost, seed=opts.seed)
        except ValueError as exc:
            fc_error = str(exc)
    return Study(data=data, options=opts, fits=fits, errors=errors, backtests=backtests, backtest_error=backtest_error,
                 choice=choice, forecast_form=fc_form, forecast=fc, forecast_error=fc_error, frontier=frontier,
                 isoflop=isoflop, notes=tuple(notes), flops_per_nd_source=k_source)
