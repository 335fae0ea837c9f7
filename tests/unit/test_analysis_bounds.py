"""Bounded metrics: HR, NDCG, MRR in [0, 1], NE and losses positive; fits, forecasts and choices respect it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import curve_fit

from analysis.bounds import metric_bounds
from analysis.curves import CurveFamily
from analysis.dataset import ScalingData
from analysis.forecast import forecast
from analysis.forms import fit_form
from analysis.loglinear import LogLinear
from analysis.powerlaw import fit_saturating_power_law
from analysis.study import StudyOptions, run_study
from analysis.varpro import profile_fit

FLOPS = np.geomspace(1e13, 1e15, 12)
L = np.log(FLOPS / 1e13)
# Accelerating in ln C over two decades, as in a clean CSV that gave y_max = 143 for ndcg.
CONVEX = 0.05 + 0.012 * L + 0.0005 * L**2


def data(y: np.ndarray, metric: str, higher_is_better: bool = True, flops: np.ndarray = FLOPS) -> ScalingData:
    return ScalingData(metric=metric, higher_is_better=higher_is_better, flops=flops, y=y,
                       run_ids=tuple(f"r{i}" for i in range(y.size)))


@pytest.mark.parametrize(("metric", "lo", "hi"), [
    ("hr@10", 0.0, 1.0), ("ndcg@50", 0.0, 1.0), ("mrr", 0.0, 1.0), ("NDCG@10", 0.0, 1.0), ("val_hr@100", 0.0, 1.0),
    ("ne", 0.0, math.inf), ("loss", 0.0, math.inf), ("val_loss", 0.0, math.inf), ("throughput", -math.inf, math.inf),
])
def test_metric_bounds_from_the_name(metric: str, lo: float, hi: float) -> None:
    b = metric_bounds(metric)
    assert (b.lo, b.hi) == (lo, hi)
    assert b.bounded == ((lo, hi) != (-math.inf, math.inf))


def test_saturating_fit_keeps_y_max_at_most_one_and_calls_it_not_identified() -> None:
    free = fit_saturating_power_law(FLOPS, CONVEX, higher_is_better=True, n_bootstrap=200, metric_name="score")
    assert free.params["y_max"] > 100  # unbounded metric: the runaway asymptote the issue reported
    fit = fit_saturating_power_law(FLOPS, CONVEX, higher_is_better=True, n_bootstrap=200, metric_name="ndcg@10")
    assert fit.params["y_max"] <= 1.0 and fit.params["y_max"] == pytest.approx(1.0)
    assert "y_max" in fit.params_at_bounds and "y_max" in fit.not_identified
    assert np.all(fit.bootstrap_params[:, 0] <= 1.0 + 1e-12)
    out = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert out["param_intervals"]["y_max"] is None and "bound 1" in out["not_identified"]["y_max"]
    assert out["bounds"] == {"lo": 0.0, "hi": 1.0, "why": "ndcg@10 is a fraction in [0, 1]"}
    for name, (lo, hi) in fit.param_intervals.items():  # every reported interval contains its estimate
        assert name in fit.not_identified or lo <= fit.params[name] <= hi


def test_a_parameter_at_its_optimiser_bound_has_no_interval() -> None:
    # Unbounded metric, convex data: alpha runs to 1e-4 (the old report: alpha 0.0001 [0.0001094, 5]).
    fit = fit_saturating_power_law(FLOPS, CONVEX, higher_is_better=True, n_bootstrap=200, metric_name="score")
    assert fit.alpha_at_bound and fit.params["alpha"] == pytest.approx(1e-4)
    assert set(fit.not_identified) == {"y_max", "A", "alpha"}
    assert all(math.isnan(lo) and math.isnan(hi) for lo, hi in fit.param_intervals.values())
    assert fit.to_dict()["param_intervals"] == {"y_max": None, "A": None, "alpha": None}
    assert "only y_max - A and A * alpha" in fit.not_identified["alpha"]


def test_ne_asymptote_stays_non_negative() -> None:
    c0 = float(np.exp(np.mean(np.log(FLOPS))))
    x = FLOPS / c0
    y = 0.8 * x**-0.05 - 0.02  # a curve whose asymptote lies below 0: not an NE curve
    free = fit_saturating_power_law(FLOPS, y, higher_is_better=False, n_bootstrap=0, metric_name="score")
    fit = fit_saturating_power_law(FLOPS, y, higher_is_better=False, n_bootstrap=100, metric_name="ne")
    assert free.params["E"] == pytest.approx(-0.02, abs=1e-6)
    assert fit.params["E"] == pytest.approx(0.0, abs=1e-9) and "E" in fit.not_identified
    assert np.all(fit.bootstrap_params[:, 0] >= -1e-12)
    # With E on its bound the fit is the best pure power law A x^-alpha (scipy, independently).
    (a, alpha), _ = curve_fit(lambda x_, a_, al_: a_ * x_**-al_, x, y, p0=(0.8, 0.05))
    assert fit.params["A"] == pytest.approx(a, rel=1e-5) and fit.params["alpha"] == pytest.approx(alpha, rel=1e-5)


def test_bounded_profile_solver_matches_the_bounded_least_squares_fit() -> None:
    fit = fit_saturating_power_law(FLOPS, CONVEX, higher_is_better=True, n_bootstrap=0, metric_name="ndcg@10")
    mu, sd = CONVEX.mean(), CONVEX.std()
    row = profile_fit(np.log(FLOPS / fit.c0), (CONVEX - mu) / sd, np.ones((1, FLOPS.size)), -1.0, (1.0 - mu) / sd)[0]
    assert mu + sd * row[0] == pytest.approx(1.0)
    assert sd * row[1] == pytest.approx(fit.params["A"], rel=1e-5)
    assert row[2] == pytest.approx(fit.params["alpha"], rel=1e-5)


def test_values_outside_the_range_are_rejected_with_the_likely_cause() -> None:
    with pytest.raises(ValueError, match=r"outside the metric's range \[0, 1\].*percentage"):
        fit_form("log_linear", data(100 * CONVEX + 5, "ndcg@10"))


def test_forecast_intervals_stay_in_range_and_a_leaving_point_is_flagged() -> None:
    fitted = fit_form("log_linear", data(0.3 + 0.12 * np.log(FLOPS / 1e14), "ndcg@10"), seed=0)
    fc = forecast(fitted.curve(), form="log_linear", max_observed_flops=1e15, at_flops=[1e16, 1e17], targets=[1.2])
    near, far = fc.at
    assert near["in_bounds"] and near["value"] == pytest.approx(near["value_fitted"])
    assert not far["in_bounds"] and far["value_fitted"] > 1.0 and far["value"] == 1.0
    for row in fc.at:
        for kind in ("curve", "new_run"):
            for lo, hi in row[kind].values():
                assert 0.0 <= lo <= hi <= 1.0
    assert fc.out_of_bounds and any("leaves the metric's range [0, 1]" in n for n in fc.notes)
    assert not fc.targets[0]["reachable"] and "outside the metric's range" in fc.targets[0]["verdict"]
    assert fc.to_dict()["bounds"]["hi"] == 1.0


def test_curve_family_new_runs_are_clipped() -> None:
    curve = CurveFamily(form=LogLinear(higher_is_better=True), point=np.array([0.99, 0.0]),
                        draws=np.tile([0.99, 0.0], (200, 1)), noise_sd=np.full(200, 0.05),
                        bounds=metric_bounds("hr@10"))
    runs = curve.new_run(np.array([1e14]), np.random.default_rng(0))
    assert runs.max() == 1.0 and runs.min() < 0.99 and np.mean(runs == 1.0) > 0.3


def test_auto_choice_skips_a_form_whose_forecast_leaves_the_range() -> None:
    y = 0.3 + 0.12 * np.log(FLOPS / 1e14) + np.random.default_rng(0).normal(0.0, 2e-3, FLOPS.size)
    study = run_study(data(y, "ndcg@10"), StudyOptions(n_bootstrap=100, backtest_bootstrap=50, cost=None))
    row = {r["form"]: r for r in study.choice.table}
    assert row["log_linear"]["excluded"] and "leaves the metric's range [0, 1]" in row["log_linear"]["excluded"]
    assert study.forecast_form not in ("log_linear", None)
    assert row[study.forecast_form]["excluded"] is None
    assert all(r["in_bounds"] and 0.0 <= r["value"] <= 1.0 for r in study.forecast.at)
    assert any("the log_linear form is flagged" in n for n in study.notes)
    # Asked for by name, the form is used, with its forecast clipped and flagged.
    forced = run_study(data(y, "ndcg@10"), StudyOptions(form="log_linear", n_bootstrap=100, backtest_bootstrap=0,
                                                        cost=None))
    assert forced.forecast_form == "log_linear" and forced.forecast.out_of_bounds
