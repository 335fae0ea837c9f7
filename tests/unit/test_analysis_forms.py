"""One-variable forms (pure power law, coverage of the saturating law), backtests and model choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.backtest import backtest, choose_form, holdout_mask
from analysis.dataset import ScalingData
from analysis.fit import fit_saturating_power_law
from analysis.forms import fit_form
from analysis.purepower import fit_pure_power_law

FLOPS = np.geomspace(1e13, 1e15, 16)
C0 = float(np.exp(np.mean(np.log(FLOPS))))


def data(y: np.ndarray, flops: np.ndarray = FLOPS, higher_is_better: bool = True, groups=None) -> ScalingData:
    return ScalingData(metric="m", higher_is_better=higher_is_better, flops=flops, y=y,
                       run_ids=tuple(f"r{i}" for i in range(y.size)), groups=groups)


def test_pure_power_law_matches_log_log_polyfit_and_keeps_the_summary() -> None:
    rng = np.random.default_rng(1)
    y = 0.9 * (FLOPS / C0) ** -0.07 * np.exp(rng.normal(0.0, 0.01, FLOPS.size))
    fit = fit_pure_power_law(FLOPS, y, metric_name="ne")
    b, k = np.polyfit(np.log(FLOPS / C0), np.log(y), 1)
    assert fit.params["b"] == pytest.approx(b, rel=1e-9)
    assert fit.params["K"] == pytest.approx(math.exp(k), rel=1e-9)
    assert fit.c0 == pytest.approx(C0)
    lo, hi = fit.param_intervals["b"]
    assert lo < -0.07 < hi
    assert "OLS Regression Results" in fit.summary_text and "ln ne" in fit.summary_text
    np.testing.assert_allclose(fit.predict(FLOPS), np.exp(k + b * np.log(FLOPS / C0)), rtol=1e-12)
    band_lo, band_hi = fit.band(FLOPS)
    assert np.all(band_lo < fit.predict(FLOPS)) and np.all(fit.predict(FLOPS) < band_hi)


def test_pure_power_exponent_interval_coverage_over_100_datasets() -> None:
    hits = 0
    for s in range(100):
        y = 0.9 * (FLOPS / C0) ** -0.07 * np.exp(np.random.default_rng(s).normal(0.0, 0.01, FLOPS.size))
        lo, hi = fit_pure_power_law(FLOPS, y).param_intervals["b"]
        hits += lo <= -0.07 <= hi
    assert hits >= 88, hits  # exact t intervals under log-normal noise: nominal 95


def test_pure_power_rejects_non_positive_metric() -> None:
    with pytest.raises(ValueError, match="needs y > 0"):
        fit_pure_power_law(FLOPS[:4], [0.1, -0.2, 0.3, 0.4])


@pytest.mark.parametrize("higher_is_better", [True, False], ids=["quality", "loss_like"])
def test_saturating_law_intervals_cover_truth_over_100_datasets(higher_is_better) -> None:
    # Measured coverage of the nominal 95% percentile intervals at these seeds (16 runs, 200
    # resamples): quality y_max 92, A 92, alpha 94; loss-like E 91, A 91, alpha 93.
    truth = {"y_max": 0.2, "A": 0.05, "alpha": 0.4} if higher_is_better else {"E": 0.75, "A": 0.12, "alpha": 0.6}
    asym, amp, alpha = truth.values()
    sign = -1.0 if higher_is_better else 1.0
    hits = dict.fromkeys(truth, 0)
    for s in range(100):
        y = asym + sign * amp * (FLOPS / C0) ** -alpha + np.random.default_rng(s).normal(0.0, 3e-3, FLOPS.size)
        fit = fit_saturating_power_law(FLOPS, y, higher_is_better=higher_is_better, n_bootstrap=200, seed=s)
        for name, value in truth.items():
            lo, hi = fit.param_intervals[name]
            hits[name] += lo <= value <= hi
    assert min(hits.values()) >= 85, hits


def test_power_law_bootstrap_over_replicate_groups() -> None:
    c = np.repeat(FLOPS[::2], 2)  # 8 configs x 2 seeds
    y = 0.2 - 0.05 * (c / C0) ** -0.4 + np.random.default_rng(1).normal(0.0, 2e-3, c.size)
    groups = [int(i) for i in np.repeat(np.arange(8), 2)]
    fit = fit_saturating_power_law(c, y, higher_is_better=True, n_bootstrap=300, groups=groups)
    assert fit.bootstrap_unit == "replicate group (config)"
    assert fit.n_bootstrap_used + fit.n_bootstrap_degenerate == 300


def test_holdout_mask_fraction_count_and_ties() -> None:
    c = np.array([1.0, 2.0, 3.0, 4.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    assert holdout_mask(c, 0.2).tolist() == [False] * 8 + [True] * 2
    assert holdout_mask(c, 1).tolist() == [False] * 9 + [True]
    assert holdout_mask(c, 6).sum() == 7  # the 6th largest is tied at 4.0: both copies held out
    assert holdout_mask(c, 6.0).sum() == 7
    for bad, pattern in ((0.0, "fraction in"), (1.5, "whole run count"), (10, "leaves none"), (True, "fraction")):
        with pytest.raises(ValueError, match=pattern):
            holdout_mask(c, bad)
    with pytest.raises(ValueError, match="no smaller runs"):
        holdout_mask(np.ones(4), 1)


def test_backtest_on_noise_free_power_law_data_is_exact_and_chooses_it() -> None:
    c = np.geomspace(1e13, 1e16, 20)
    y = 0.2 - 0.05 * (c / 1e14) ** -0.4
    d = data(y, c)
    bt = backtest("power_law", d, holdout=4, n_bootstrap=50)
    assert bt.ok and bt.n_train == 16 and len(bt.run_ids) == 4
    assert bt.threshold_flops == pytest.approx(c[-4])
    np.testing.assert_allclose(bt.predicted, y[-4:], rtol=1e-6)
    assert bt.mean_abs_rel_err < 1e-6
    fits = {name: fit_form(name, d, n_bootstrap=50) for name in ("power_law", "log_linear", "pure_power")}
    bts = {name: backtest(name, d, holdout=4, n_bootstrap=50) for name in fits}
    assert bts["log_linear"].mean_abs_rel_err > 1e-3
    choice = choose_form(fits, bts)
    assert choice.chosen == "power_law" and choice.criterion.startswith("backtest")
    row = next(r for r in choice.table if r["form"] == "power_law")
    assert row["backtest_mean_abs_rel_err"] < 1e-6
    out = bt.to_dict()
    assert out["n_holdout"] == 4 and out["runs"][0]["rel_err"] == pytest.approx(float(bt.rel_err[0]))


def test_backtest_records_a_form_that_cannot_be_fitted() -> None:
    y = np.linspace(0.1, 0.2, 6)
    bt = backtest("power_law", data(y, np.geomspace(1e13, 1e15, 6)), holdout=3)
    assert not bt.ok and "needs at least 4" in bt.error and math.isnan(bt.mean_abs_rel_err)
    assert bt.to_dict()["mean_abs_rel_err"] is None


def test_information_criteria_and_aic_fallback() -> None:
    rng = np.random.default_rng(2)
    y = 0.2 - 0.05 * (FLOPS / C0) ** -0.4 + rng.normal(0.0, 1e-3, FLOPS.size)
    d = data(y)
    fits = {name: fit_form(name, d, n_bootstrap=0) for name in ("power_law", "log_linear")}
    f = fits["power_law"]
    rss = float(np.sum((y - f.fit.predict(FLOPS)) ** 2))
    assert f.rss == pytest.approx(rss)
    assert f.aic == pytest.approx(16 * math.log(rss / 16) + 2 * 4)
    assert f.bic == pytest.approx(16 * math.log(rss / 16) + 4 * math.log(16))
    choice = choose_form(fits, {})
    assert choice.criterion.startswith("AIC") and choice.chosen == min(fits, key=lambda k: fits[k].aic)
    assert choose_form(fits, {}, candidates=["log_linear"]).chosen == "log_linear"
