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
from analysis.loglinear import LogLinear
from analysis.powerlaw import PowerLaw
from analysis.purepower import PurePower
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


SAT = CurveFamily(form=PowerLaw(c0=1e14, higher_is_better=True), point=np.array([0.2, 0.05, 0.4]),
                  draws=np.empty((0, 3)))


@pytest.mark.parametrize("curve", [
    SAT,
    CurveFamily(form=LogLinear(higher_is_better=True), point=np.array([-0.25, 0.012]), draws=np.empty((0, 2))),
    CurveFamily(form=PurePower(c0=1e14, higher_is_better=False), point=np.array([math.log(0.9), -0.07]),
                draws=np.empty((0, 2))),
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
    return CurveFamily(form=PowerLaw(c0=1e14, higher_is_better=True, description="test curve"),
                       point=np.array([0.2, 0.05, 0.4]), draws=draws, residuals=rng.normal(0.0, 2e-3, 30))


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
    curve = CurveFamily(form=LogLinear(higher_is_better=True), point=np.array([-0.25, 0.012]), draws=np.empty((0, 2)))
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


def _log_linear_data(n: int = 10, seed: int = 3) -> ScalingData:
    c = np.geomspace(1e13, 1e15, n)
    y = 0.10 + 0.012 * np.log(c / 1e13) + np.random.default_rng(seed).normal(0.0, 2e-3, n)
    return ScalingData(metric="hr@50", higher_is_better=True, flops=c, y=y, run_ids=tuple(map(str, range(n))))


def test_log_linear_new_run_interval_is_the_exact_t_prediction_interval() -> None:
    # For a model linear in its parameters the draws (noise SD from its chi-square, then the
    # refitted line) reproduce the textbook intervals; 20,000 draws pin the quantiles to ~1%.
    from scipy import stats

    from analysis.forms import fit_form

    d = _log_linear_data()
    fitted = fit_form("log_linear", d, n_bootstrap=20_000, seed=1)
    x0 = np.array([3e14, 1e16])
    fc = forecast(fitted.curve(), form="log_linear", max_observed_flops=1e15, at_flops=x0, seed=2)
    u, u0 = np.log(d.flops), np.log(x0)
    b, a = np.polyfit(u, d.y, 1)
    s = math.sqrt(np.sum((d.y - a - b * u) ** 2) / (u.size - 2))
    lever = 1 / u.size + (u0 - u.mean()) ** 2 / np.sum((u - u.mean()) ** 2)
    t = stats.t.ppf(0.975, u.size - 2)
    for j, row in enumerate(fc.at):
        centre = a + b * u0[j]
        for kind, var in (("new_run", 1 + lever[j]), ("curve", lever[j])):
            half = t * s * math.sqrt(var)
            lo, hi = row[kind]["95%"]
            assert lo == pytest.approx(centre - half, abs=0.03 * half), (kind, j)
            assert hi == pytest.approx(centre + half, abs=0.03 * half), (kind, j)
    # The run-to-run SD uses ddof = the number of parameters (2), not 1.
    assert fc.residual_sd == pytest.approx(s) and fc.residual_df == u.size - 2


def test_noise_model_with_replicates_uses_configuration_means() -> None:
    from analysis.noise import estimate_noise

    r = np.array([0.01, 0.03, -0.02, -0.01, 0.0, 0.004, 0.02, 0.01, -0.03, -0.02])
    g = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    noise = estimate_noise(r, 2, g)
    means = [(r[2 * k] + r[2 * k + 1]) / 2 for k in range(5)]
    within = sum((r[i] - means[g[i]]) ** 2 for i in range(10)) / (10 - 5)
    assert noise.unit == "replicate group (config)" and noise.df == 5 - 2
    assert noise.sd_curve == pytest.approx(math.sqrt(sum(m * m for m in means) / 3))
    assert noise.sd_new_run == pytest.approx(math.sqrt(sum(m * m for m in means) / 3 + within / 2))
    assert estimate_noise(r, 2).sd_curve == pytest.approx(math.sqrt(np.sum(r**2) / 8))
    ystar, sd = noise.resample(np.zeros(10), g, 4, np.random.default_rng(0))
    assert np.allclose(ystar[:, 0::2], ystar[:, 1::2]) and sd.shape == (4,)  # one draw per config


def test_study_frontier_uses_the_runs_own_flops_per_nd_by_default() -> None:
    from analysis.study import StudyOptions, run_study

    assert StudyOptions().flops_per_nd == "auto"
    n = np.repeat(np.geomspace(1e6, 1e8, 4), 4)
    d = np.tile(np.geomspace(1e8, 1e10, 4), 4)
    y = law(n, d) * np.exp(np.random.default_rng(0).normal(0.0, 0.002, n.size))
    data = ScalingData(metric="loss", higher_is_better=False, flops=9.9 * n * d, y=y,
                       run_ids=tuple(map(str, range(n.size))), n_params=n, tokens=d)
    study = run_study(data, StudyOptions(n_bootstrap=50, backtest_bootstrap=0, cost=None))
    assert study.frontier.flops_per_nd == pytest.approx(9.9)
    out = study.to_dict()
    assert out["flops_per_nd"]["value"] == pytest.approx(9.9)
    assert out["flops_per_nd"]["source"].startswith("the runs' median C / (N D) over 16 runs")
    assert out["frontier"]["convention"] == "C = 9.9 N D"
    assert "flops_per_nd" not in out["frontier"]  # k and its source are stated once, at the top
    assert any("k = 9.9" in note for note in study.notes)
    given = run_study(data, StudyOptions(n_bootstrap=50, backtest_bootstrap=0, cost=None, flops_per_nd=6.0))
    assert given.frontier.flops_per_nd == 6.0 and given.to_dict()["flops_per_nd"]["source"].startswith("given")
