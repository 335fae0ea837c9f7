"""Compute-optimal frontier, IsoFLOP approach 2, curve inversion, forecasts and ROI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from analysis.chinchilla import fit_chinchilla
from analysis.curves import CurveFamily
from analysis.dataset import ScalingData
from analysis.forecast import forecast
from analysis.frontier import compute_frontier, frontier_curve
from analysis.isoflop import fit_isoflop
from scaling.cost import CostInputs

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def law(n, d):
    return TRUTH["E"] + TRUTH["A"] / n ** TRUTH["alpha"] + TRUTH["B"] / d ** TRUTH["beta"]


@pytest.fixture(scope="module")
def exact_fit():
    n = np.repeat(np.geomspace(1e6, 1e9, 6), 6)
    d = np.tile(np.geomspace(1e8, 1e11, 6), 6)
    y = law(n, d) * np.exp(np.random.default_rng(0).normal(0.0, 0.002, n.size))
    return fit_chinchilla(n, d, y, n_bootstrap=200, seed=0)


def test_frontier_matches_a_numerical_minimisation_along_the_isoflop_line(exact_fit) -> None:
    p = exact_fit.params
    fr = compute_frontier(exact_fit, flops_per_nd=6.0)
    assert fr.a == pytest.approx(p["beta"] / (p["alpha"] + p["beta"]), rel=1e-12)
    assert fr.b == pytest.approx(p["alpha"] / (p["alpha"] + p["beta"]), rel=1e-12)
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    assert fr.G == pytest.approx(g, rel=1e-9)
    for c in (1e20, 1e23):
        def loss_at(log_n: float) -> float:
            n = math.exp(log_n)
            return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / (c / (6 * n)) ** p["beta"]

        best = minimize_scalar(loss_at, bounds=(math.log(1e3), math.log(1e15)), method="bounded",
                               options={"xatol": 1e-10})
        assert float(fr.n_opt(c)) == pytest.approx(math.exp(best.x), rel=1e-4)
        assert float(fr.n_opt(c) * fr.d_opt(c)) * 6 == pytest.approx(c, rel=1e-12)
        curve = frontier_curve(exact_fit, 6.0)
        assert float(curve.values(curve.point[None, :], np.array([c]))[0, 0]) == pytest.approx(best.fun, rel=1e-9)
    # Truth a = 0.28 / 0.62; the bootstrap interval covers it and the exponents sum to 1.
    lo, hi = fr.intervals["a"]
    assert lo <= 0.28 / 0.62 <= hi and fr.a + fr.b == pytest.approx(1.0)
    rows = fr.table(np.array([1e21]))
    assert rows[0]["n_opt_interval"][0] < rows[0]["n_opt"] < rows[0]["n_opt_interval"][1]
    assert compute_frontier(exact_fit, flops_per_nd=12.0).n_opt(1e21) == pytest.approx(fr.n_opt(0.5e21))
    with pytest.raises(ValueError, match="flops_per_nd"):
        compute_frontier(exact_fit, flops_per_nd=0.0)


def test_isoflop_approach_2_recovers_the_exponent_on_designed_profiles() -> None:
    rows_n, rows_c = [], []
    for c in (1e18, 1e19, 1e20, 1e21):
        n_star = 0.6 * (c / 6) ** (0.28 / 0.62)
        for f in np.geomspace(0.25, 4.0, 7):
            rows_n.append(n_star * f)
            rows_c.append(c)
    n, c = np.array(rows_n), np.array(rows_c)
    d = c / (6 * n)
    y = law(n, d)
    data = ScalingData(metric="loss", higher_is_better=False, flops=c, y=y, run_ids=tuple(map(str, range(n.size))),
                       n_params=n, tokens=d)
    iso = fit_isoflop(data)
    assert iso.a == pytest.approx(0.28 / 0.62, abs=0.02)
    assert iso.b == pytest.approx(1 - iso.a)
    assert len([b for b in iso.budgets if b.used]) == 4
    assert iso.a_interval[0] < iso.a < iso.a_interval[1]
    # Thin data: no budget has 3 sizes -> a note, not an exception.
    thin = fit_isoflop(ScalingData(metric="loss", higher_is_better=False, flops=c[:2], y=y[:2], run_ids=("a", "b"),
                                   n_params=n[:2], tokens=d[:2]))
    assert thin.a is None and "approach 2 needs" in thin.note


SAT = CurveFamily(kind="saturating", point=np.array([0.2, 0.05, 0.4]), draws=np.empty((0, 3)), c0=1e14, sign=-1.0,
                  higher_is_better=True)


@pytest.mark.parametrize("curve", [
    SAT,
    CurveFamily(kind="log_linear", point=np.array([-0.25, 0.012]), draws=np.empty((0, 2)), higher_is_better=True),
    CurveFamily(kind="pure_power", point=np.array([math.log(0.9), -0.07]), draws=np.empty((0, 2)), c0=1e14,
                higher_is_better=False),
], ids=["saturating", "log_linear", "pure_power"])
def test_flops_for_inverts_values(curve) -> None:
    c = np.geomspace(1e12, 1e18, 7)
    y = curve.values(curve.point[None, :], c)[0]
    back = np.array([curve.flops_for(curve.point[None, :], float(v))[0] for v in y])
    np.testing.assert_allclose(back, c, rtol=1e-9)
    h = 1e-6
    numeric = (curve.values(curve.point[None, :], c * (1 + h)) - curve.values(curve.point[None, :], c)) / (c * h)
    np.testing.assert_allclose(curve.slope(curve.point[None, :], c), numeric, rtol=1e-4)


def _noisy_curve() -> CurveFamily:
    rng = np.random.default_rng(0)
    draws = np.column_stack([0.2 + rng.normal(0, 0.004, 400), 0.05 * np.exp(rng.normal(0, 0.05, 400)),
                             0.4 * np.exp(rng.normal(0, 0.05, 400))])
    return CurveFamily(kind="saturating", point=np.array([0.2, 0.05, 0.4]), draws=draws, c0=1e14, sign=-1.0,
                       higher_is_better=True, residuals=rng.normal(0.0, 2e-3, 30), description="test curve")


def test_forecast_values_intervals_and_targets() -> None:
    curve = _noisy_curve()
    fc = forecast(curve, form="power_law", max_observed_flops=1e15, at_flops=[1e16, 1e17], targets=[0.18, 0.25, 0.3])
    at = fc.at[0]
    assert at["value"] == pytest.approx(0.2 - 0.05 * 100 ** -0.4)
    for kind in ("curve", "new_run"):
        (lo80, hi80), (lo95, hi95) = at[kind]["80%"], at[kind]["95%"]
        assert lo95 <= lo80 < at["value"] < hi80 <= hi95
    assert at["new_run"]["95%"][1] - at["new_run"]["95%"][0] > at["curve"]["95%"][1] - at["curve"]["95%"][0]
    reach, beyond, far = fc.targets
    assert reach["reachable"] and reach["flops"] == pytest.approx(1e14 * (0.02 / 0.05) ** (-1 / 0.4))
    assert reach["intervals"]["95%"][0] < reach["flops"] < reach["intervals"]["95%"][1]
    assert not beyond["reachable"] and beyond["verdict"].startswith("unreachable under the fitted power_law")
    assert "asymptote 0.2 is below the target" in beyond["verdict"] and beyond["p_reachable"] == 0.0
    assert far["p_reachable"] == 0.0 and math.isinf(far["intervals"]["95%"][0])
    assert fc.notes == ("1 budget(s) lie more than 10x beyond the largest run (1e+15 FLOPs): the intervals "
                        "assume the form keeps holding there",)  # 1e17 is 100x; 1e16 (10x) is not flagged


def test_unreachable_is_never_said_by_a_form_without_an_asymptote() -> None:
    curve = CurveFamily(kind="log_linear", point=np.array([-0.25, 0.012]), draws=np.empty((0, 2)), higher_is_better=True)
    fc = forecast(curve, form="log_linear", max_observed_flops=1e15, targets=[0.9])
    assert fc.targets[0]["reachable"] and "can never say 'unreachable'" in fc.targets[0]["verdict"]
    assert any("only 0 bootstrap refits" in n for n in fc.notes)


def test_next_10x_cost_and_marginal_gain_use_the_cost_model() -> None:
    curve = _noisy_curve()
    inputs = CostInputs(device="h100-sxm", mfu=0.5, price_per_device_hour=3.0, num_devices=8)
    nx = forecast(curve, form="power_law", max_observed_flops=1e18, cost_inputs=inputs).next_10x
    hours = 1e19 / (989e12 * 0.5) / 3600  # H100 SXM dense bf16 peak
    assert nx["cost"]["device_hours"] == pytest.approx(hours)
    assert nx["cost"]["wall_clock_hours"] == pytest.approx(hours / 8)
    assert nx["cost"]["cost"] == pytest.approx(3.0 * hours)
    gain = 0.05 * ((1e18 / 1e14) ** -0.4 - (1e19 / 1e14) ** -0.4)
    assert nx["gain"] == pytest.approx(gain) and nx["unit"] == "money"
    assert nx["gain_per_money"] == pytest.approx(gain / (3.0 * hours))
    flops_per_money = 989e12 * 0.5 * 3600 / 3.0
    slope = 0.05 * 0.4 * (1e19 / 1e14) ** -0.4 / 1e19
    assert nx["marginal_gain_per_money_at_to"] == pytest.approx(slope * flops_per_money)
    lo, hi = nx["gain_intervals"]["95%"]
    assert lo < gain < hi
    free = forecast(curve, form="power_law", max_observed_flops=1e18, cost_inputs=CostInputs()).next_10x
    assert free["unit"] == "device-hour" and free["gain_per_device_hour"] == pytest.approx(gain / (1e19 / (989e12 * 0.4) / 3600))


def test_forecast_rejects_bad_requests() -> None:
    with pytest.raises(ValueError, match="finite and > 0"):
        forecast(SAT, form="power_law", max_observed_flops=1e15, at_flops=[-1.0])
    with pytest.raises(ValueError, match="max_observed_flops"):
        forecast(SAT, form="power_law", max_observed_flops=0.0)
    with pytest.raises(ValueError, match="finite"):
        forecast(SAT, form="power_law", max_observed_flops=1e15, targets=[float("nan")])
