"""The paired per-user comparison of two models (benchmarks/ml100k.py): values and coverage."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.paired import binary_cross_entropy, paired_difference, rank_metrics


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_estimate_is_the_difference_of_seed_and_user_means():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 50)), rng.random((2, 50))
    d = paired_difference("ndcg@10", a, b, n_bootstrap=200)
    assert d.estimate == pytest.approx(a.mean() - b.mean())
    assert d.interval[0] <= d.estimate <= d.interval[1] and d.n_users == 50 and d.n_seeds == (3, 2)
    labels = (rng.random(50) < 0.4).astype(float)
    ce_a, ce_b = rng.random((3, 50)), rng.random((2, 50))
    ne = paired_difference("ne", ce_a, ce_b, labels_U=labels, n_bootstrap=200)
    p = labels.mean()
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert ne.estimate == pytest.approx((ce_a.mean() - ce_b.mean()) / entropy)
    with pytest.raises(ValueError, match="same users"):
        paired_difference("mrr", a, b[:, :10])


def test_rank_metrics_and_cross_entropy_per_user():
    m = rank_metrics([1, 10, 11, 60])
    assert m["hr@10"].tolist() == [1, 1, 0, 0] and m["hr@50"].tolist() == [1, 1, 1, 0]
    assert m["ndcg@10"][1] == pytest.approx(1 / np.log2(11)) and m["mrr"][3] == pytest.approx(1 / 60)
    z, y = np.array([-30.0, 0.0, 2.0]), np.array([1.0, 0.0, 1.0])
    assert binary_cross_entropy(z, y) == pytest.approx([30.0, np.log(2), np.log1p(np.exp(-2.0))])


@pytest.mark.parametrize("seed_sd", [0.0, 0.3])
def test_interval_covers_the_true_difference(seed_sd):
    """Per-user hit outcomes: user difficulty, a model effect, a per-(model, seed) effect and
    Bernoulli noise; 5 seeds per model, 400 users. The true Delta averages over users and seeds."""
    rng = np.random.default_rng(11)
    effect, users, seeds, sims = 0.1, 400, 5, 300
    pop = rng.normal(-1.0, 1.0, 1_000_000)
    true = np.mean(_sigmoid(pop + effect + rng.normal(0, seed_sd, pop.size)) - _sigmoid(pop + rng.normal(0, seed_sd, pop.size)))
    covered = 0
    for i in range(sims):
        mu = rng.normal(-1.0, 1.0, users)
        a, b = (
            (rng.random((seeds, users)) < _sigmoid(mu + e + rng.normal(0, seed_sd, (seeds, 1)))).astype(float)
            for e in (effect, 0.0)
        )
        d = paired_difference("hr@10", a, b, n_bootstrap=400, seed=i)
        covered += d.interval[0] <= true <= d.interval[1]
    assert 0.90 <= covered / sims <= 0.98, covered / sims


def test_no_effect_is_rarely_significant_for_ne():
    """Equal models (NE on per-user cross-entropies): the 95% interval excludes zero <= ~6% of the time."""
    rng = np.random.default_rng(3)
    users, seeds, sims = 400, 5, 200
    false_positives = 0
    for i in range(sims):
        logit = rng.normal(-0.3, 1.0, users)
        labels = (rng.random(users) < _sigmoid(logit)).astype(float)
        ce = [binary_cross_entropy(logit + rng.normal(0, 0.5, (seeds, users)) + rng.normal(0, 0.05, (seeds, 1)), labels)
              for _ in range(2)]
        false_positives += paired_difference("ne", ce[0], ce[1], labels_U=labels, n_bootstrap=400, seed=i).significant
    assert false_positives / sims <= 0.06, false_positives / sims
