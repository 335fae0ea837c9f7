"""Honesty of the improvement verdict, and the log-linear reference fit."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from analysis.evidence import spearman_permutation
from analysis.fit import assess_improvement, fit_log_linear, fit_saturating_power_law

FLOPS = np.geomspace(1e13, 5e14, 12)  # 1.7 orders of magnitude
C0 = float(np.exp(np.mean(np.log(FLOPS))))


def _evidence(y, *, higher_is_better=True, metric_name="NDCG@10", seed=0, n_bootstrap=300):
    fit = fit_saturating_power_law(FLOPS, y, higher_is_better=higher_is_better, n_bootstrap=n_bootstrap, seed=seed)
    return fit, assess_improvement(fit, FLOPS, y, metric_name=metric_name)


def _one_sentence(text: str) -> bool:
    return text.endswith(".") and ". " not in text and "Caveats" not in text


def test_clearly_improving_quality_is_reported_with_numbers() -> None:
    rng = np.random.default_rng(0)
    y = 0.20 - 0.05 * (FLOPS / C0) ** -0.4 + rng.normal(0.0, 2e-3, FLOPS.size)
    fit, ev = _evidence(y)
    assert ev.improves
    change = float(fit.predict(FLOPS.max()) - fit.predict(FLOPS.min()))
    lo, hi = ev.gain_interval
    assert ev.verdict == (f"NDCG@10 improves with compute: {change:+.3g} (95% interval {lo:.3g} to {hi:.3g}) over 1.7 "
                          f"decades of training FLOPs; significant (Spearman on 12 runs, permutation p = "
                          f"{ev.spearman_p_one_sided:.2g}).")
    assert _one_sentence(ev.verdict)
    assert ev.gain_interval[0] > 0 and ev.gain_interval_excludes_zero
    assert ev.spearman_rho > 0.8 and ev.spearman_p_one_sided < 0.05
    assert ev.rank_unit == "runs" and ev.n_rank_points == 12
    assert ev.gain == pytest.approx(change)
    assert ev.predicted_at_min == pytest.approx(float(fit.predict(FLOPS.min())))
    assert ev.orders_of_magnitude == pytest.approx(np.log10(50.0))


def test_improving_loss_is_reported_with_its_negative_change() -> None:
    rng = np.random.default_rng(1)
    y = 0.75 + 0.12 * (FLOPS / C0) ** -0.6 + rng.normal(0.0, 2e-3, FLOPS.size)
    fit, ev = _evidence(y, higher_is_better=False, metric_name="NE")
    assert ev.improves
    assert ev.verdict.startswith("NE improves with compute: -")
    lo, hi = ev.gain_interval  # positive = better; the sentence gives the change in NE units
    assert f"(95% interval {-hi:.3g} to {-lo:.3g})" in ev.verdict
    assert ev.gain > 0  # positive = better, although NE went down
    assert ev.spearman_rho < -0.8


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_flat_noisy_data_gives_no_evidence(seed) -> None:
    rng = np.random.default_rng(100 + seed)
    y = 0.20 + rng.normal(0.0, 3e-3, FLOPS.size)
    _, ev = _evidence(y, seed=seed)
    assert not ev.improves
    assert ev.verdict.startswith("The data cannot tell whether NDCG@10 improves with compute: fitted change ")
    assert _one_sentence(ev.verdict)


def test_quality_that_gets_worse_gives_no_evidence() -> None:
    rng = np.random.default_rng(4)
    y = 0.20 - 0.005 * np.log(FLOPS / C0) + rng.normal(0.0, 1e-3, FLOPS.size)
    fit, ev = _evidence(y)
    assert not ev.improves
    assert "A" in fit.params_at_bounds  # the constrained fit is flat: A >= 0 cannot follow a decline
    assert fit.not_identified.keys() >= {"A", "alpha"}
    assert "which includes 0" in ev.verdict and "; not significant (Spearman on 12 runs" in ev.verdict


def test_false_positive_rate_on_flat_data_is_small() -> None:
    # Both tests must pass, so pure noise should rarely be called an improvement (nominal <= 5%).
    calls = 0
    for s in range(20):
        y = 0.20 + np.random.default_rng(500 + s).normal(0.0, 3e-3, FLOPS.size)
        calls += _evidence(y, seed=s, n_bootstrap=100)[1].improves
    assert calls <= 3


def test_unsaturated_log_linear_data_carries_a_caveat_beside_a_one_sentence_verdict() -> None:
    rng = np.random.default_rng(6)
    y = 0.20 + 0.01 * np.log(FLOPS / C0) + rng.normal(0.0, 5e-4, FLOPS.size)
    _, ev = _evidence(y)
    assert ev.improves
    assert any("lower bound" in c for c in ev.caveats)
    assert _one_sentence(ev.verdict)
    assert ev.to_dict()["caveats"] == list(ev.caveats)


def test_evidence_rejects_points_that_are_not_the_fitted_ones() -> None:
    y = 0.20 - 0.05 * (FLOPS / C0) ** -0.4
    fit = fit_saturating_power_law(FLOPS, y, higher_is_better=True, n_bootstrap=0)
    with pytest.raises(ValueError, match="not the ones the fit used"):
        assess_improvement(fit, FLOPS[:-1], y[:-1])
    ev = assess_improvement(fit, FLOPS, y)
    assert not ev.improves and "(no interval: too few resamples)" in ev.verdict
    assert json.loads(json.dumps(ev.to_dict(), allow_nan=False))["gain_interval"] == [None, None]


def _replicated(seed: int, trend: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """8 configs x 2 seeds: a config-level effect (sd 4e-3) shared by both seeds, seed noise 1e-3."""
    rng = np.random.default_rng(seed)
    c8 = np.geomspace(1e13, 5e14, 8)
    level = 0.2 + trend * np.log(c8 / c8[0]) + rng.normal(0.0, 4e-3, 8)
    c = np.repeat(c8, 2)
    return c, np.repeat(level, 2) + rng.normal(0.0, 1e-3, 16), [int(g) for g in np.repeat(np.arange(8), 2)]


def test_rank_test_uses_one_point_per_configuration_with_an_exact_permutation_p() -> None:
    c, y, groups = _replicated(3, 0.004)
    fit = fit_saturating_power_law(c, y, higher_is_better=True, n_bootstrap=200, groups=groups, metric_name="ndcg@10")
    ev = assess_improvement(fit, c, y, metric_name="ndcg@10")  # the groups come with the fit
    assert ev.rank_unit == "configuration means" and ev.n_rank_points == 8
    assert ev.to_dict()["rank_test"] == "Spearman on configuration means, n=8, one-sided exact permutation p"
    # Independent reference: every ordering of the 8 configuration means, by plain loops, with
    # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) (the means are distinct, so there are no ties).
    means = [float(np.mean(y[2 * g: 2 * g + 2])) for g in range(8)]
    ranks = [sorted(means).index(m) for m in means]

    def rho_of(order: tuple[int, ...]) -> float:
        return 1 - 6 * sum((i - ranks[j]) ** 2 for i, j in enumerate(order)) / (8 * 63)

    rho = rho_of(tuple(range(8)))
    at_least = sum(rho_of(perm) >= rho - 1e-12 for perm in itertools.permutations(range(8)))
    assert ev.spearman_rho == pytest.approx(rho)
    assert ev.spearman_p_one_sided == pytest.approx(at_least / math.factorial(8))
    assert ev.spearman_p_one_sided >= 1 / math.factorial(8)  # never "p < 1e-12" from 8 configurations
    assert "Spearman on 8 configuration means, permutation p = " in ev.verdict
    # Explicit groups override; without any, the 16 runs are ranked.
    runs = assess_improvement(fit, c, y, groups=list(range(16)))
    assert runs.rank_unit == "runs" and runs.n_rank_points == 16


def test_random_permutation_p_matches_the_exact_one_beyond_eight_configurations() -> None:
    x = np.geomspace(1e13, 1e15, 12)
    y = np.random.default_rng(2).normal(size=12) + 0.3 * np.arange(12)
    r, p, method = spearman_permutation(x, y, greater=True, seed=0)
    rx = stats.rankdata(x) - 6.5

    def rho(v: np.ndarray, axis: int = -1) -> np.ndarray:  # Pearson on ranks, vectorised for scipy
        rv = stats.rankdata(v, axis=axis) - 6.5
        return (rv * rx).sum(axis) / np.sqrt((rv**2).sum(axis) * (rx**2).sum())

    reference = stats.permutation_test((y,), rho, permutation_type="pairings", vectorized=True,
                                       alternative="greater", n_resamples=20000, rng=1)
    assert method == "20000 random permutations"
    assert r == pytest.approx(stats.spearmanr(x, y).statistic) and r == pytest.approx(float(rho(y)))
    assert p == pytest.approx(reference.pvalue, abs=4 * math.sqrt(p * (1 - p) / 20000) + 1e-4)


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
