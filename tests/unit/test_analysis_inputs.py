"""Bad inputs to the fits raise ValueError naming the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.fit import fit_log_linear, fit_saturating_power_law

GOOD_FLOPS = [1e13, 1e14, 1e15, 1e16]
GOOD_Y = [0.10, 0.15, 0.17, 0.18]


@pytest.mark.parametrize(
    ("flops", "y", "pattern"),
    [
        ([1e13, np.nan, 1e15, 1e16], GOOD_Y, r"flops contains NaN or inf .*index 1"),
        ([1e13, 1e14, np.inf, 1e16], GOOD_Y, r"flops contains NaN or inf .*index 2"),
        (GOOD_FLOPS, [0.1, 0.15, np.nan, 0.18], r"y \(the metric\) contains NaN or inf .*drop diverged"),
        (GOOD_FLOPS, [0.1, -np.inf, 0.17, 0.18], r"y \(the metric\) contains NaN or inf"),
        ([1e13, 0.0, 1e15, 1e16], GOOD_Y, r"flops must be positive .*index 1"),
        ([1e13, -1e14, 1e15, 1e16], GOOD_Y, r"flops must be positive"),
        (GOOD_FLOPS, GOOD_Y[:3], r"flops has 4 values but y has 3"),
        (GOOD_FLOPS[:3], GOOD_Y[:3], r"got 3 points; .* needs at least 4 .*add runs"),
        ([1e13, 1e13, 1e15, 1e15, 1e15], [0.1, 0.11, 0.17, 0.18, 0.19], r"got 2 distinct flops value\(s\).*at least 3"),
        (GOOD_FLOPS, [0.2, 0.2, 0.2, 0.2], r"constant .*0.2.*metric key"),
        ([[1e13, 1e14], [1e15, 1e16]], GOOD_Y, r"flops must be 1-D"),
        (["a", "b", "c", "d"], GOOD_Y, r"flops must be a 1-D sequence of numbers"),
    ],
    ids=[
        "nan_flops", "inf_flops", "nan_y", "inf_y", "zero_flops", "negative_flops", "length_mismatch",
        "too_few_points", "too_few_distinct_flops", "constant_metric", "two_dimensional", "not_numbers",
    ],
)
def test_power_law_rejects_bad_points(flops, y, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        fit_saturating_power_law(flops, y, higher_is_better=True, n_bootstrap=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"level": 1.5}, ValueError, r"level must be in \(0, 1\)"),
        ({"level": 0.0}, ValueError, r"level must be in \(0, 1\)"),
        ({"n_bootstrap": -1}, ValueError, r"n_bootstrap must be a non-negative int"),
        ({"start_alphas": (9.0,)}, ValueError, r"start_alphas must lie in"),
        ({"higher_is_better": "yes"}, TypeError, r"higher_is_better must be a bool"),
    ],
)
def test_power_law_rejects_bad_options(kwargs, error, pattern) -> None:
    args = {"higher_is_better": True, "n_bootstrap": 0, **kwargs}
    with pytest.raises(error, match=pattern):
        fit_saturating_power_law(GOOD_FLOPS, GOOD_Y, **args)


def test_log_linear_needs_three_points_at_two_budgets() -> None:
    fit_log_linear([1e13, 1e14, 1e14], [0.1, 0.15, 0.16])  # 3 points, 2 budgets: enough
    with pytest.raises(ValueError, match=r"got 2 points; the log-linear fit needs at least 3"):
        fit_log_linear([1e13, 1e14], [0.1, 0.15])
    with pytest.raises(ValueError, match=r"got 1 distinct flops value"):
        fit_log_linear([1e14, 1e14, 1e14], [0.1, 0.15, 0.16])
