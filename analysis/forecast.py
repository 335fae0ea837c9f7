"""Forecasts from a fitted curve in C: the metric at a budget, the budget for a target, and ROI.

Three questions, each answered with bootstrap intervals at 80% and 95%:
- the metric at C FLOPs: the interval of the fitted curve (where the mean run would land) and the
  wider interval for one new run (curve draw + Gaussian noise whose SD is estimated with ddof = the
  number of parameters and drawn per row from its chi-square distribution, `analysis.noise`; the
  old curve-draw + resampled-raw-residual interval covered 81% at nominal 95% with 8 runs). Both
  stay inside the metric's range (`analysis.bounds`); a point forecast outside it is flagged
  ("in_bounds": false, the value clipped, the unclipped one kept as "value_fitted");
- the FLOPs needed to reach a metric value y: each bootstrap curve inverted in closed form; a
  curve that saturates before y never reaches it, so the answer can be "unreachable", and the
  share of refits that reach y is reported (an interval's upper end may be unreachable too);
- the next 10x: the cost of one run at 10x the largest observed FLOPs (`scaling.cost`: device,
  MFU, price per device-hour), the metric it buys over the largest run, that gain per unit of
  money (or per device-hour when no price is given), and the marginal gain d metric / d money.

Forecasts extrapolate: a power law fitted over two decades says nothing certain about the third.
The intervals carry the fit's uncertainty, not the risk that the form itself stops holding; the
backtest (`analysis.backtest`) is the evidence on that.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.curves import CurveFamily
from analysis.noise import estimate_noise
from analysis.varpro import MIN_BOOTSTRAP_FOR_INTERVALS
from scaling.cost import CostInputs, cost

Array = npt.NDArray[np.float64]
LEVELS = (0.8, 0.95)
_SECONDS_PER_HOUR = 3600.0


def _q(values: Array, level: float) -> tuple[float, float]:
    v = values[~np.isnan(values)]
    if v.size < MIN_BOOTSTRAP_FOR_INTERVALS:
        return (math.nan, math.nan)
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def _intervals(values: Array) -> dict[str, tuple[float, float]]:
    return {f"{round(100 * lv)}%": _q(values, lv) for lv in LEVELS}


def _g(v: float) -> str:
    return "unreachable" if v == math.inf else ("n/a" if not math.isfinite(v) else f"{v:.3g}")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Forecast:
    form: str
    description: str
    higher_is_better: bool
    asymptote: float | None
    max_observed_flops: float
    residual_sd: float
    at: tuple[dict[str, Any], ...]
    targets: tuple[dict[str, Any], ...]
    next_10x: dict[str, Any] | None
    notes: tuple[str, ...]
    residual_df: float = math.nan  # degrees of freedom behind residual_sd (n - p, or configs - p)
    bounds: dict[str, Any] = dataclasses.field(default_factory=dict)  # the metric's range: lo, hi, why
    out_of_bounds: bool = False  # some point forecast leaves the metric's range (clipped, flagged)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"at": list(self.at), "targets": list(self.targets), "notes": list(self.notes)}


def _at(curve: CurveFamily, flops: Array, rng: np.random.Generator) -> list[dict[str, Any]]:
    raw = curve.values(curve.point[None, :], flops)[0]
    inside = curve.in_bounds(flops)
    point = curve.bounds.clip(raw)
    draws = curve.bounds.clip(curve.values(curve.draws, flops)) if curve.draws.size else np.empty((0, flops.size))
    noisy = curve.new_run(flops, rng) if curve.draws.size else draws
    return [
        {"flops": float(c), "value": float(point[j]), "value_fitted": float(raw[j]), "in_bounds": bool(inside[j]),
         "curve": _intervals(draws[:, j]), "new_run": _intervals(noisy[:, j])}
        for j, c in enumerate(flops)
    ]


def _target(curve: CurveFamily, target: float, form: str, max_flops: float) -> dict[str, Any]:
    if not bool(curve.bounds.contains(target)):
        return {"target": float(target), "reachable": False, "flops": math.inf,
                "intervals": {f"{round(100 * lv)}%": (math.inf, math.inf) for lv in LEVELS}, "p_reachable": 0.0,
                "verdict": f"unreachable: {target:g} lies outside the metric's range {curve.bounds.text()} "
                           f"({curve.bounds.why})"}
    c_point = float(curve.flops_for(curve.point[None, :], target)[0])
    draws = curve.flops_for(curve.draws, target) if curve.draws.size else np.empty(0)
    p_reach = float(np.mean(np.isfinite(draws))) if draws.size else math.nan
    ints = _intervals(draws)
    reach_txt = f"; {100 * p_reach:.0f}% of bootstrap refits reach it" if draws.size else ""
    if c_point == math.inf:
        asym = curve.asymptote
        why = (f"its asymptote {asym:.4g} is {'below' if curve.higher_is_better else 'above'} the target"
               if asym is not None else "the fitted curve does not improve with compute")
        verdict = f"unreachable under the fitted {form}: {why}{reach_txt}"
    else:
        lo80, hi80 = ints["80%"]
        lo95, hi95 = ints["95%"]
        verdict = (f"about {c_point:.3g} FLOPs (80%: {_g(lo80)} to {_g(hi80)}; 95%: {_g(lo95)} to {_g(hi95)})"
                   f"{reach_txt}")
        if c_point <= max_flops:
            verdict += "; the fit says runs already observed reach it"
    if curve.asymptote is None:
        verdict += f" (the {form} form has no asymptote, so it can never say 'unreachable')"
    return {"target": float(target), "reachable": c_point != math.inf, "flops": c_point, "intervals": ints,
            "p_reachable": p_reach, "verdict": verdict}


def _next_10x(curve: CurveFamily, base: float, inputs: CostInputs) -> dict[str, Any]:
    better = 1.0 if curve.higher_is_better else -1.0
    to = 10.0 * base
    est = cost(to, inputs)
    pair = np.array([base, to])
    point = curve.bounds.clip(curve.values(curve.point[None, :], pair)[0])
    draws = curve.bounds.clip(curve.values(curve.draws, pair)) if curve.draws.size else np.empty((0, 2))
    gain, gains = better * float(point[1] - point[0]), better * (draws[:, 1] - draws[:, 0])
    priced = inputs.price_per_device_hour > 0
    unit = "money" if priced else "device-hour"
    per_unit = est.cost if priced else est.device_hours
    flops_per_unit = inputs.peak * inputs.mfu * _SECONDS_PER_HOUR / (inputs.price_per_device_hour if priced else 1.0)
    slope = better * curve.slope(curve.point[None, :], pair)[0] * flops_per_unit
    slopes = better * curve.slope(curve.draws, pair) * flops_per_unit if draws.size else np.empty((0, 2))
    return {
        "from_flops": base,
        "to_flops": to,
        "cost": est.to_dict(),
        "gain": gain,
        "gain_intervals": _intervals(gains),
        "unit": unit,
        f"gain_per_{unit.replace('-', '_')}": gain / per_unit if per_unit > 0 else math.nan,
        f"gain_per_{unit.replace('-', '_')}_intervals": _intervals(gains / per_unit) if per_unit > 0 else {},
        f"marginal_gain_per_{unit.replace('-', '_')}_at_from": float(slope[0]),
        f"marginal_gain_per_{unit.replace('-', '_')}_at_to": float(slope[1]),
        "marginal_intervals_at_to": _intervals(slopes[:, 1]) if slopes.size else {},
    }


def forecast(
    curve: CurveFamily,
    *,
    form: str,
    max_observed_flops: float,
    at_flops: Sequence[float] = (),
    targets: Sequence[float] = (),
    cost_inputs: CostInputs | None = None,
    seed: int = 0,
) -> Forecast:
    """Answer the forecast questions for `curve`; `max_observed_flops` anchors "the next 10x"."""
    at = np.asarray(list(at_flops), np.float64)
    if at.size and (not np.all(np.isfinite(at)) or np.any(at <= 0)):
        raise ValueError(f"forecast FLOPs must be finite and > 0, got {list(at_flops)}")
    for t in targets:
        if not math.isfinite(t):
            raise ValueError(f"target metric values must be finite, got {t}")
    if not (math.isfinite(max_observed_flops) and max_observed_flops > 0):
        raise ValueError(f"max_observed_flops must be > 0, got {max_observed_flops}")
    rng = np.random.default_rng(seed)
    notes = []
    if curve.draws.shape[0] < MIN_BOOTSTRAP_FOR_INTERVALS:
        notes.append(f"only {curve.draws.shape[0]} bootstrap refits: no intervals (refit with more resamples)")
    beyond = at[at > 10 * max_observed_flops] if at.size else at
    if beyond.size:
        notes.append(f"{beyond.size} budget(s) lie more than 10x beyond the largest run ({max_observed_flops:.3g} "
                     "FLOPs): the intervals assume the form keeps holding there")
    # ddof = the number of parameters (not 1): the fit used p degrees of freedom of the residuals;
    # with seed replicates the fit's own noise model (per config) is the one the intervals used.
    n_par = curve.fit_params
    noise = curve.noise if curve.noise is not None and curve.noise.space == "metric" else (
        estimate_noise(curve.residuals, n_par) if curve.residuals.size > n_par else None)
    resid_sd = noise.sd_new_run if noise is not None else math.nan
    rows = _at(curve, at, rng) if at.size else []
    outside = [r for r in rows if not r["in_bounds"]]
    if outside:
        notes.append(f"the {form} forecast leaves the metric's range {curve.bounds.text()} ({curve.bounds.why}) at "
                     + ", ".join(f"{r['flops']:.3g} FLOPs ({r['value_fitted']:.4g})" for r in outside)
                     + ": values and intervals are clipped to the range; do not use this form there")
    return Forecast(
        form=form,
        description=curve.description,
        higher_is_better=curve.higher_is_better,
        asymptote=curve.asymptote,
        max_observed_flops=float(max_observed_flops),
        residual_sd=resid_sd,
        residual_df=float(noise.df) if noise is not None else math.nan,
        bounds=curve.bounds.to_dict(),
        out_of_bounds=bool(outside),
        at=tuple(rows),
        targets=tuple(_target(curve, float(t), form, max_observed_flops) for t in targets),
        next_10x=None if cost_inputs is None else _next_10x(curve, float(max_observed_flops), cost_inputs),
        notes=tuple(notes),
    )
