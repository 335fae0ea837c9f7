"""The Performance Law fit: recovers known parameters from simulated runs, backtests, refuses bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from analysis import performance_law as law

TRUE = np.array([-0.02, 0.8, -0.015, 0.6, -0.01, 0.4, 0.05])  # w_L, a_L, w_d, a_d, w_D, a_D, b


def _grid(repeats: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [(layers, dim, data) for layers, dim, data in itertools.product(
        (1, 2, 4, 8), (16, 32, 64, 128), (2e3, 2e4, 2e5, 2e6))] * repeats
    return tuple(np.array(column, dtype=float) for column in zip(*rows))  # type: ignore[return-value]


def test_the_fit_recovers_known_parameters_from_simulated_runs() -> None:
    layers, dim, data = _grid()
    y = law.predict(TRUE, layers, dim, data) + np.random.default_rng(0).normal(0, 1e-5, layers.size)
    fitted = law.fit(layers, dim, data, y)
    assert fitted.r2 > 0.999 and fitted.residual_sd < 2e-5
    np.testing.assert_allclose(fitted.params, TRUE, rtol=0.05, atol=2e-3)
    doc = fitted.to_dict()
    assert set(doc["params"]) == set(law.PARAMS) and doc["n_runs"] == 64


def test_an_input_of_two_values_leaves_its_weight_and_exponent_unidentified_and_says_so() -> None:
    layers, dim, data = _grid()
    layers = np.where(layers > 2, 2.0, layers)  # depth 1 or 2, as in the ML-100K study
    fitted = law.fit(layers, dim, data, law.predict(TRUE, layers, dim, data))
    assert set(fitted.not_identified) == {"w_L", "a_L"} and "layers takes 2 distinct value(s) (1, 2)" in fitted.not_identified["a_L"]
    assert np.allclose(fitted.predict(layers, dim, data), law.predict(TRUE, layers, dim, data), atol=1e-4)
    assert fitted.to_dict()["not_identified"]["w_L"].startswith("layers")
    with_intervals = law.fit(layers, dim, data, law.predict(TRUE, layers, dim, data)
                             + np.random.default_rng(1).normal(0, 1e-4, layers.size), n_bootstrap=20)
    assert np.isnan(with_intervals.lower[0]) and np.isnan(with_intervals.upper[1])  # w_L, a_L: no interval
    assert with_intervals.to_dict()["intervals"]["w_L"] == [None, None]


def test_an_exponent_the_runs_cannot_pin_down_is_flagged_with_its_weight() -> None:
    layers, dim, data = _grid()
    params = TRUE.copy()
    params[5] = 2.0  # data^-2 vanishes over 2e3..2e6: the term is -a ln x, only w_D x a_D shows
    y = law.predict(params, layers, dim, data) + np.random.default_rng(3).normal(0, 2e-4, layers.size)
    fitted = law.fit(layers, dim, data, y, n_bootstrap=20)
    assert {"w_D", "a_D"} <= set(fitted.not_identified) and "halved or doubled" in fitted.not_identified["a_D"]
    assert "a_d" not in fitted.not_identified and "a_L" not in fitted.not_identified
    assert fitted.to_dict()["intervals"]["a_D"] == [None, None]


@pytest.mark.slow
def test_the_bootstrap_intervals_cover_the_true_parameters_near_their_level() -> None:
    # A small version of benchmarks/performance_law_coverage.py (100 studies: 87-93% at 90%):
    # 30 studies, 60 refits each; binomial sd 5.5%, so 75% or more for every parameter.
    layers, dim, data = _grid()
    clean = law.predict(TRUE, layers, dim, data)
    rng = np.random.default_rng(7)
    hits, given = np.zeros(len(law.PARAMS)), np.zeros(len(law.PARAMS))
    for study in range(30):
        fitted = law.fit(layers, dim, data, clean + rng.normal(0, 2e-4, clean.size), n_bootstrap=60, level=0.9,
                         seed=study)
        assert fitted.n_bootstrap >= 55
        given += np.isfinite(fitted.lower)  # no interval where the fit says the runs cannot tell
        hits += (fitted.lower <= TRUE) & (TRUE <= fitted.upper)
    assert np.all(given >= 15) and np.all(hits / given >= 0.75), dict(zip(law.PARAMS, zip(hits, given)))
    assert fitted.to_dict()["intervals"]["a_L"][0] is not None


def test_the_backtest_predicts_the_top_decade_from_the_runs_below_it() -> None:
    layers, dim, data = _grid()
    flops = 6.0 * layers * dim**2 * data  # compute grows with every input
    y = law.predict(TRUE, layers, dim, data)
    result = law.backtest(layers, dim, data, y, flops)
    assert result.n_held_out == int((flops >= flops.max() / 10).sum()) and result.n_fit + result.n_held_out == 64
    assert result.max_relative_error < 1e-3  # noiseless: the law extrapolates exactly
    with pytest.raises(ValueError, match="inside and below the top decade"):
        law.backtest(layers[:2], dim[:2], data[:2], y[:2], np.ones(2))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "layers": a["layers"][:-1]}, "layers must have one value per run"),
        (lambda a: {**a, "data": np.where(a["data"] > 1e6, 0.0, a["data"])}, "data \\(tokens x ApEn\\) must be finite and > 0"),
        (lambda a: {k: v[:5] for k, v in a.items()}, "needs more runs, got 5"),
    ],
)
def test_bad_inputs_are_refused_with_the_input_named(change, message: str) -> None:
    layers, dim, data = _grid()
    args = change({"layers": layers, "dim": dim, "data": data, "y": law.predict(TRUE, layers, dim, data)})
    with pytest.raises(ValueError, match=message):
        law.fit(args["layers"], args["dim"], args["data"], args["y"])
