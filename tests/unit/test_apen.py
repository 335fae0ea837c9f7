"""Approximate Entropy: the fast paths against the definition as loops, and its known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.apen import approximate_entropy, approximate_entropy_direct, dataset_apen
from gr_core.sequences import SequenceData


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("r", [0.0, 0.2, 1.0, 2.5])
def test_fast_paths_match_the_definition_on_small_sequences(m: int, r: float) -> None:
    rng = np.random.default_rng(m * 10 + int(r * 10))
    for trial in range(12):
        n = int(rng.integers(0, 40))
        x = rng.integers(1, 2 + trial % 6, size=n).tolist()  # few symbols: many repeated windows
        assert approximate_entropy(x, m, r) == pytest.approx(approximate_entropy_direct(x, m, r), abs=1e-12)


def test_a_constant_sequence_has_zero_and_a_random_one_tends_to_ln_k() -> None:
    assert approximate_entropy([7] * 500, 2, 0.2) == pytest.approx(0.0, abs=1e-12)
    assert approximate_entropy([3, 9] * 400, 2, 0.2) < 0.01  # periodic: predictable
    x = np.random.default_rng(0).integers(1, 5, size=40_000)  # uniform over K = 4 items
    value = approximate_entropy(x, 2, 0.2)
    assert value == pytest.approx(math.log(4), abs=0.01)
    assert value < math.log(4)  # biased low, never above the entropy rate here
    assert approximate_entropy(x[:60], 2, 0.2) < value - 0.3  # and much lower on a short sequence


def test_a_sequence_without_repeated_windows_has_the_value_of_its_length_alone() -> None:
    for n in (10, 65, 300):
        x = np.random.default_rng(n).permutation(5000)[:n] + 1  # distinct items: no window repeats
        assert approximate_entropy(x, 2, 0.2) == pytest.approx(math.log((n - 1) / (n - 2)), rel=1e-12)


def test_a_sequence_shorter_than_the_window_counts_zero_and_bad_parameters_are_refused() -> None:
    assert approximate_entropy([1, 2], 2) == approximate_entropy_direct([1, 2], 2) == 0.0
    with pytest.raises(ValueError, match="window length m must be an integer >= 1"):
        approximate_entropy([1, 2, 3], 0)
    with pytest.raises(ValueError, match="tolerance r must be finite and >= 0"):
        approximate_entropy([1, 2, 3], 1, -1.0)


def test_the_dataset_value_is_the_mean_over_users_of_their_last_items() -> None:
    users = [[1, 2, 1, 2, 1, 2, 1, 2], [5] * 6, [4, 8, 2, 6, 4, 1, 3, 3, 9, 9, 2]]
    data = SequenceData.from_sequences(users, num_items=9)
    expected = np.mean([approximate_entropy_direct(seq[-6:], 2, 0.2) for seq in users])
    assert dataset_apen(data, max_len=6) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="max_len must be >= m \\+ 1"):
        dataset_apen(data, max_len=2)
