"""Honesty of the improvement verdict, and the log-linear reference fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.fit import assess_improvement, fit_log_linear, fit_saturating_power_law

FLOPS = np.geomspace(1e13, 5e14, 12)  # 1.7 orders of magnitude
C0 = float(np.exp(np.mean(np.log(FLOPS))))


def _evidence(y, *, higher_is_better=True, metric_name="NDCG@10", seed=0, n_bootstrap=300):
    fit = fit_saturating_power_law(FLOPS, y, higher_is_better=higher_is_better, n_bootstrap=n_bootstrap, seed=seed)
    return fit, assess_improvement(fit, FLOPS, y, metric_name=metric_name)


def test_clearly_improving_quality_is_reported_with_numbers() -> None:
    rng = np.random.default_rng(0)
    y = 0.20 - 0.05 * (FLOPS / C0) ** -0.4 + rng.normal(0.0, 2e-3, FLOPS.size)
    fit, ev = _evidence(y)
    assert ev.improves
    assert ev.verdict.startswith("Quality improves with compute: NDCG@10 rises from ")
    assert "over 1.7 orders of magnitude" in ev.verdict
    assert "95% interval of the gain" in ev.verdict
    assert ev.gain_interval[0] > 0 and ev.gain_interval_excludes_zero
    assert ev.spearman_rho > 0.8 and ev.spearman_p_one_sided < 0.05
    expected_gain = float(fit.predict(FLOPS.max()) - fit.predict(FLOPS.min()))
    assert ev.gain == pytest.approx(expected_gain)
    assert ev.predicted_at_min == pytest.approx(float(fit.predict(FLOPS.min())))
    assert ev.orders_of_magnitude == pytest.approx(np.log10(50.0))


def test_improving_loss_is_reported_as_falling() -> None:
    rng = np.random.default_rng(1)
    y = 0.75 + 0.12 * (FLOPS / C0) ** -0.6 + rng.normal(0.0, 2e-3, FLOPS.size)
    fit, ev = _evidence(y, higher_is_better=False, metric_name="NE")
    assert ev.improves
    assert "NE falls from" in ev.verdict
    assert ev.gain > 0  # positive = better, although NE went down
    assert ev.spearman_rho < -0.8


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_flat_noisy_data_gives_no_evidence(seed) -> None:
    rng = np.random.default_rng(100 + seed)
    y = 0.20 + rng.normal(0.0, 3e-3, FLOPS.size)
    _, ev = _evidence(y, seed=seed)
    assert not ev.improves
    assert ev.verdict.startswith("No evidence that quality improves with compute over this range")


def test_quality_that_gets_worse_gives_no_evidence() -> None:
    rng = np.random.default_rng(4)
    y = 0.20 - 0.005 * np.log(FLOPS / C0) + rng.normal(0.0, 1e-3, FLOPS.size)
    fit, ev = _evidence(y)
    assert not ev.improves
    assert "A" in fit.params_at_bounds  # the constrained fit is flat: A >= 0 cannot follow a decline
    assert "not significant" in ev.verdict and "does not exclude 0" in ev.verdict


def test_false_positive_rate_on_flat_data_is_small() -> None:
    # Both tests must pass, so pure noise should rarely be called an improvement (nominal <= 5%).
    calls = 0
    for s in range(20):
        y = 0.20 + np.random.default_rng(500 + s).normal(0.0, 3e-3, FLOPS.size)
        calls += _evidence(y, seed=s, n_bootstrap=100)[1].improves
    assert calls <= 3


def test_unsaturated_log_linear_data_carries_a_caveat() -> None:
    rng = np.random.default_rng(6)
    y = 0.20 + 0.01 * np.log(FLOPS / C0) + rng.normal(0.0, 5e-4, FLOPS.size)
    _, ev = _evidence(y)
    assert ev.improves
    assert any("lower bound" in c for c in ev.caveats)
    assert "Caveats:" in ev.verdict


def test_evidence_rejects_points_that_are_not_the_fitted_ones() -> None:
    y = 0.20 - 0.05 * (FLOPS / C0) ** -0.4
    fit = fit_saturating_power_law(FLOPS, y, higher_is_better=True, n_bootstrap=0)
    with pytest.raises(ValueError, match="not the ones the fit used"):
        assess_improvement(fit, FLOPS[:-1], y[:-1])
    ev = assess_improvement(fit, FLOPS, y)
    assert not ev.improves and "no bootstrap interval" in ev.verdict
    assert json.loads(json.dumps(ev.to_dict(), allow_nan=False))["gain_interval"] == [None, None]


def test_log_linear_recovers_slope_and_matches_numpy() -> None:
    rng = np.random.default_rng(8)
    y = -0.25 + 0.012 * np.log(FLOPS) + rng.normal(0.0, 1e-3, FLOPS.size)
    ll = fit_log_linear(FLOPS, y, metric_name="HR@100")
    b, a = np.polyfit(np.log(FLOPS), y, 1)
    assert ll.params["a"] == pytest.approx(a, rel=1e-9)
    assert ll.params["b"] == pytest.approx(b, rel=1e-9)
    assert ll.gain_per_decade == pytest.approx(b * np.log(10))
    # Band half-width from an independent formula: t * s * sqrt(1/n + (u - ubar)^2 / Sxx).
    u = np.log(FLOPS)
    resid = y - (a + b * u)
    s = np.sqrt(np.sum(resid**2) / (u.size - 2))
    from scipy import stats

    half = stats.t.ppf(0.975, u.size - 2) * s * np.sqrt(1 / u.size + (u - u.mean()) ** 2 / np.sum((u - u.mean()) ** 2))
    band_lo, band_hi = ll.band(FLOPS)
    np.testing.assert_allclose(band_hi - band_lo, 2 * half, rtol=1e-6)
    assert "OLS Regression Results" in ll.summary_text and "HR@100" in ll.summary_text
    assert json.loads(json.dumps(ll.to_dict(), allow_nan=False))["params"]["b"] == pytest.approx(b)


def test_log_linear_slope_interval_coverage() -> None:
    hits = 0
    for s in range(100):
        y = -0.25 + 0.012 * np.log(FLOPS) + np.random.default_rng(s).normal(0.0, 1e-3, FLOPS.size)
        lo, hi = fit_log_linear(FLOPS, y).param_intervals["b"]
        hits += lo < 0.012 < hi
    assert 0.88 <= hits / 100 <= 0.99  # nominal 95%: exact t intervals under Gaussian noise
