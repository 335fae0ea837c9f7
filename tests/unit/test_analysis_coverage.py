"""Calibration by simulation: new-run prediction intervals, parameter intervals, the evidence test's size.

Each sweep is realistic data: x = training FLOPs on a log grid spanning 1, 2 or 3 decades (cycled),
y = a known curve plus noise small against the curve's change (like a metric's scatter across
seeds), quality metrics inside [0, 1]. Everything goes through the code the CLI runs
(`fit_form` -> `FormFit.curve()` -> `forecast`), at the default 500 draws, seeded per sweep.

Measured at these seeds (nominal 95%; parameters among the sweeps that report an interval):
  saturating, 8 runs:   new run 95.0% mid-range, 96.0% at 10x beyond the largest run; y_max 95.2%,
                        A 94.5%, alpha 95.5% (y_max not identified, pinned at 1, in 7% of sweeps)
  saturating, 16 runs:  new run 97.0% / 93.0%; y_max 94.4%, A 93.5%, alpha 93.5%
  log-linear, 8 runs:   new run 94.0% / 95.5%; a 94.3%, b 94.0%   (16 runs: 93.5% / 94.8%; 93.5%, 93.2%)
  pure power, 8 runs:   as log-linear (the same noise draws, in ln y); 16 runs: K 95.5%, b 93.2%
  evidence, 8 configs x 2 seeds, no effect: verdict 4.0%, rank test 5.7%, runs as points 12.3%.
The former method (bootstrap over runs + a resampled raw residual; Spearman over runs) measured
80-85% mid-range new-run coverage on the same sweeps and a 8.7% false-positive verdict rate.
Print the numbers with `pytest -s -m "slow or not slow" tests/unit/test_analysis_coverage.py`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from analysis.dataset import ScalingData
from analysis.evidence import assess_improvement
from analysis.forecast import forecast
from analysis.forms import fit_form
from analysis.powerlaw import fit_saturating_power_law

SPANS = (1.0, 2.0, 3.0)  # decades of training FLOPs, cycled over the sweeps
SD = 2e-3  # run-to-run noise: metric units (ln units for the pure power law)


@dataclasses.dataclass(frozen=True)
class Case:
    metric: str
    higher_is_better: bool
    curve: Callable[[np.ndarray, float], np.ndarray]  # (C, C0) -> mean metric
    truth: dict[str, float]  # parameters as the fit reports them (C0 = the sweep's geometric-mean FLOPs)
    log_noise: bool = False


CASES = {
    # NDCG@10 rising to 0.25 with exponent 0.3: 0.14 at the smallest run of a 3-decade sweep.
    "power_law": Case("ndcg@10", True, lambda c, c0: 0.25 - 0.04 * (c / c0) ** -0.3,
                      {"y_max": 0.25, "A": 0.04, "alpha": 0.3}),
    # HR@50 log-linear in C (HSTU's plot): 0.10 at 1e13 FLOPs, +0.028 per decade.
    "log_linear": Case("hr@50", True, lambda c, c0: 0.10 + 0.012 * np.log(c / 1e13),
                       {"a": 0.10 - 0.012 * math.log(1e13), "b": 0.012}),
    # NE falling as a pure power law; the form's noise model is multiplicative.
    "pure_power": Case("ne", False, lambda c, c0: 0.9 * (c / c0) ** -0.02, {"K": 0.9, "b": -0.02}, log_noise=True),
}


def _noisy(case: Case, c: np.ndarray, c0: float, rng: np.random.Generator) -> np.ndarray:
    mean = case.curve(c, c0)
    return mean * np.exp(rng.normal(0.0, SD, c.size)) if case.log_noise else mean + rng.normal(0.0, SD, c.size)


def simulate(form: str, n_runs: int, n_sweeps: int) -> dict[str, float]:
    """Coverage of 95% new-run intervals (mid-range, 10x beyond) and of parameter intervals."""
    case = CASES[form]
    hits = {"mid": 0, "10x": 0}
    param_hits = dict.fromkeys(case.truth, 0)
    reported = dict.fromkeys(case.truth, 0)
    for s in range(n_sweeps):
        rng = np.random.default_rng(s)
        c = np.geomspace(1e13, 1e13 * 10 ** SPANS[s % len(SPANS)], n_runs)
        c0 = float(np.exp(np.mean(np.log(c))))
        data = ScalingData(metric=case.metric, higher_is_better=case.higher_is_better, flops=c,
                           y=_noisy(case, c, c0, rng), run_ids=tuple(f"r{i}" for i in range(n_runs)))
        at = np.array([math.sqrt(c[n_runs // 2 - 1] * c[n_runs // 2]), 10 * c.max()])
        new_runs = _noisy(case, at, c0, rng)
        fitted = fit_form(form, data, seed=s)
        fc = forecast(fitted.curve(), form=form, max_observed_flops=float(c.max()), at_flops=at, seed=s)
        for key, row, new in zip(hits, fc.at, new_runs):
            lo, hi = row["new_run"]["95%"]
            hits[key] += lo <= new <= hi
        for name, value in case.truth.items():
            lo, hi = fitted.fit.param_intervals[name]
            if math.isfinite(lo):  # NaN: reported as not identified, no interval to cover anything
                reported[name] += 1
                param_hits[name] += lo <= value <= hi
    out = {f"new_run_{k}": v / n_sweeps for k, v in hits.items()}
    out |= {f"param_{k}": param_hits[k] / max(reported[k], 1) for k in case.truth}
    out |= {f"reported_{k}": reported[k] / n_sweeps for k in case.truth}
    print(f"\n{form}, {n_runs} runs, {n_sweeps} sweeps: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    return out


def _check(out: dict[str, float]) -> None:
    for key in ("new_run_mid", "new_run_10x"):
        assert 0.90 <= out[key] <= 0.98, (key, out)
    for key, value in out.items():
        if key.startswith("param_"):
            assert value >= 0.90, (key, out)
        if key.startswith("reported_"):
            assert value >= 0.85, (key, out)  # "not identified" may not become a way to dodge coverage


@pytest.mark.parametrize("n_runs", [8, 16])
@pytest.mark.parametrize("form", ["log_linear", "pure_power"])
def test_linear_forms_intervals_are_calibrated(form: str, n_runs: int) -> None:
    # 400 sweeps: these fits are closed-form, and more sweeps halve the simulation noise.
    _check(simulate(form, n_runs, 400))


@pytest.mark.slow
@pytest.mark.parametrize("n_runs", [8, 16])
def test_saturating_law_intervals_are_calibrated(n_runs: int) -> None:
    _check(simulate("power_law", n_runs, 200))


def _replicated_null(seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """8 configs x 2 seeds over 1.7 decades, no trend: config effect sd 4e-3, seed noise sd 1e-3."""
    rng = np.random.default_rng(seed)
    c8 = np.geomspace(1e13, 5e14, 8)
    level = 0.2 + rng.normal(0.0, 4e-3, 8)
    return np.repeat(c8, 2), np.repeat(level, 2) + rng.normal(0.0, 1e-3, 16), [i // 2 for i in range(16)]


@pytest.mark.slow
def test_evidence_false_positive_rate_with_seed_replicates() -> None:
    n_sweeps = 300
    calls = rank_calls = naive_calls = 0
    for s in range(n_sweeps):
        c, y, groups = _replicated_null(10_000 + s)
        fit = fit_saturating_power_law(c, y, higher_is_better=True, n_bootstrap=200, seed=s, groups=groups,
                                       metric_name="ndcg@10")
        ev = assess_improvement(fit, c, y, metric_name="ndcg@10")
        calls += ev.improves
        rank_calls += ev.spearman_p_one_sided < 0.05
        # What the test used to do: 16 runs as independent points.
        naive_calls += stats.spearmanr(c, y, alternative="greater").pvalue < 0.05
    rates = {"verdict": calls / n_sweeps, "rank_test": rank_calls / n_sweeps, "runs_as_points": naive_calls / n_sweeps}
    print(f"\nfalse-positive rates under no effect, 8 configs x 2 seeds, {n_sweeps} sweeps: {rates}")
    assert rates["verdict"] <= 0.06 and rates["rank_test"] <= 0.06, rates
    assert rates["runs_as_points"] >= 0.10, rates  # the failure mode this guards against is real here
