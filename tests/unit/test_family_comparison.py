"""Comparing families' scaling slopes: the interval covers, the test holds its level, the verdict follows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.family_comparison import compare_slopes, top_decade_holdout

FLOPS = np.geomspace(1e10, 1e12, 18)  # a family's runs over two decades, as in the ML-100K study
LN10 = math.log(10.0)


def _runs(a: float, gain_per_decade: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    return a + gain_per_decade / LN10 * np.log(FLOPS / 1e10) + rng.normal(0.0, sd, FLOPS.size)


def test_the_difference_interval_covers_and_the_test_holds_its_level() -> None:
    # 600 simulated pairs of families with unequal noise: the 95% interval of the difference of
    # gains per decade holds the truth in ~95% (binomial sd 0.9%), and with equal slopes the test
    # rejects in ~5%.
    rng = np.random.default_rng(0)
    covered = rejected = 0
    sims = 600
    for _ in range(sims):
        cmp = compare_slopes("hstu", FLOPS, _runs(0.05, 0.012, 0.004, rng), "sasrec", FLOPS, _runs(0.06, 0.008, 0.002, rng),
                             metric="ndcg@10", higher_is_better=True)
        covered += cmp.interval[0] <= 0.004 <= cmp.interval[1]
        same = compare_slopes("hstu", FLOPS, _runs(0.05, 0.01, 0.004, rng), "sasrec", FLOPS, _runs(0.06, 0.01, 0.002, rng),
                              metric="ndcg@10", higher_is_better=True)
        rejected += same.significant
    assert 0.93 <= covered / sims <= 0.97
    assert 0.03 <= rejected / sims <= 0.07


def test_the_verdict_names_the_family_that_scales_better_and_where_the_lines_cross() -> None:
    rng = np.random.default_rng(1)
    steep, flat = _runs(0.04, 0.03, 0.001, rng), _runs(0.06, 0.01, 0.001, rng)  # meet at 1e11 FLOPs
    cmp = compare_slopes("hstu", FLOPS, steep, "sasrec", FLOPS, flat, metric="ndcg@10", higher_is_better=True)
    assert cmp.significant and cmp.better == "hstu" and cmp.difference == pytest.approx(0.02, abs=0.003)
    assert cmp.crossover_flops == pytest.approx(1e11, rel=0.3)
    lo, hi = cmp.crossover_interval
    assert lo < cmp.crossover_flops < hi
    text = cmp.verdict()
    assert text.startswith("On ndcg@10, hstu scales better with compute than sasrec")
    assert "passes sasrec's at" in text and "behind below that compute, ahead above it" in text
    # NE: lower is better, so the family whose NE falls faster scales better.
    ne = compare_slopes("hstu", FLOPS, 0.9 - (steep - 0.04), "sasrec", FLOPS, 0.9 - (flat - 0.06), metric="ne",
                        higher_is_better=False)
    assert ne.better == "hstu" and ne.difference < 0


def test_when_the_data_cannot_tell_the_verdict_says_so() -> None:
    rng = np.random.default_rng(2)
    cmp = compare_slopes("hstu", FLOPS, _runs(0.05, 0.010, 0.01, rng), "fuxi", FLOPS, _runs(0.05, 0.011, 0.01, rng),
                         metric="hr@10", higher_is_better=True)
    assert not cmp.significant and cmp.better is None and cmp.crossover_flops is None
    assert cmp.verdict().startswith("On hr@10, the data cannot tell whether hstu or fuxi scales better")
    assert cmp.interval[0] < 0 < cmp.interval[1]
    doc = cmp.to_dict()
    assert doc["better"] is None and doc["verdict"] == cmp.verdict() and "Welch" in doc["test"]


def test_the_top_decade_holds_the_runs_within_10x_of_the_largest() -> None:
    assert top_decade_holdout(np.array([1.0, 5.0, 10.0, 20.0, 100.0])) == 3  # C >= 10: 10, 20 and 100
    assert top_decade_holdout(np.array([1e10, 2e11, 1e12])) == 2


def test_runs_that_do_not_overlap_in_compute_give_the_range_they_span_together() -> None:
    rng = np.random.default_rng(3)
    cmp = compare_slopes("hstu", FLOPS, _runs(0.04, 0.03, 0.001, rng), "sasrec", FLOPS * 1000, _runs(0.06, 0.01, 0.001, rng),
                         metric="ndcg@10", higher_is_better=True)
    assert cmp.flops_range == (FLOPS.min(), FLOPS.max() * 1000)
    assert cmp.significant and cmp.better == "hstu"


def test_the_crossover_sentence_follows_its_interval_not_only_its_point() -> None:
    import dataclasses

    rng = np.random.default_rng(1)
    cmp = compare_slopes("hstu", FLOPS, _runs(0.04, 0.03, 0.001, rng), "sasrec", FLOPS, _runs(0.06, 0.01, 0.001, rng),
                         metric="ndcg@10", higher_is_better=True)
    lo, hi = cmp.flops_range
    below = dataclasses.replace(cmp, crossover_flops=lo / 10, crossover_interval=(lo / 100, lo / 2))
    assert "ahead of sasrec's over the range of compute studied" in below.verdict()
    straddling = dataclasses.replace(cmp, crossover_flops=lo / 2, crossover_interval=(lo / 100, lo * 5))
    assert "the data cannot place that point" in straddling.verdict()
    beyond = dataclasses.replace(cmp, crossover_flops=hi * 10, crossover_interval=(hi * 2, hi * 50))
    assert "an extrapolation beyond the largest run" in beyond.verdict()
