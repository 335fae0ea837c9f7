"""Is model A better than model B on the same test users? A paired bootstrap with a seed term.

Two models trained with several seeds each are evaluated on the same users. The quantity of
interest is the difference of their population metrics, Delta = E[m_A] - E[m_B], where the
expectation runs over test users and over training seeds. Both vary, and they are crossed (every
seed scores every user), so resampling users and seeds both would count the per-user noise twice
(a seed's mean already carries it). Instead:

1. the users are resampled with replacement, the same users for both models (pairing removes the
   user-difficulty variance the models share), and Delta is recomputed on each model's
   seed-averaged per-user values: the test-user sampling variance, per-user noise included;
2. the seed-to-seed variance beyond that noise, tau_m^2 = max(0, s_m^2 - w_m / U) / S_m per model
   (s_m^2: variance of the S_m per-seed metrics; w_m: mean over users of the per-user variance
   across seeds, the noise that s_m^2 also contains), is added to each replicate as an
   independent Student-t draw scaled by sqrt(tau_A^2 + tau_B^2), Welch-Satterthwaite degrees of
   freedom (the models' seeds are not paired; tau^2 rests on a few seeds).

The interval is the percentile interval of the replicates; the two-sided p-value is twice the
smaller tail beyond zero (at least 1 / replicates). "Significant" means the interval excludes
zero. Coverage is checked by simulation in tests/unit/test_analysis_paired.py (per-user outcomes
with user, seed and per-user noise: 95% intervals cover the true Delta in 92-98% of simulated
comparisons, with seed effects from none to dominant).

Metrics are either means of per-user values (HR@K, NDCG@K, MRR from each user's target rank) or
NE, a ratio over users: mean cross-entropy over the entropy of the (resampled) users' base rate.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PairedDifference:
    metric: str
    estimate: float  # A - B on all users and all seeds
    interval: tuple[float, float]
    level: float
    p_value: float
    n_users: int
    n_seeds: tuple[int, int]
    n_bootstrap: int

    @property
    def significant(self) -> bool:
        return not (self.interval[0] <= 0.0 <= self.interval[1])

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["interval"] = list(self.interval)
        out["n_seeds"] = list(self.n_seeds)
        out["significant"] = self.significant
        out["test"] = (f"paired bootstrap over {self.n_users} test users of the seed-averaged per-user values "
                       f"({self.n_seeds[0]} and {self.n_seeds[1]} seeds) plus the seed-to-seed variance, "
                       f"{self.n_bootstrap} replicates, percentile {self.level:.0%} interval")
        return out


def rank_metrics(ranks: npt.ArrayLike) -> dict[str, Array]:
    """Per-user hr@10, hr@50, ndcg@10, ndcg@50 and mrr from 1-based target ranks [..., U]."""
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, Array] = {}
    for k in (10, 50):
        hit = r <= k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
    out["mrr"] = 1.0 / r
    return out


def binary_cross_entropy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> Array:
    """Per-user BCE of logits against {0, 1} labels (stable form)."""
    z, y = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    return np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))


def _binary_entropy(p: Array) -> Array:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def _check(a: Array, b: Array, name: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"{name}: expected [seeds, users] arrays over the same users, got {a.shape} and {b.shape}")


def paired_difference(
    metric: str,
    a_SU: npt.ArrayLike,
    b_SU: npt.ArrayLike,
    *,
    labels_U: npt.ArrayLike | None = None,
    n_bootstrap: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Delta = metric(A) - metric(B) with its paired two-level bootstrap interval (module docstring).

    a_SU, b_SU: per-user values [seeds, users] in the same user order: the metric's per-user
    values, or for metric "ne" the per-user cross-entropies, with labels_U the users' labels.
    """
    a, b = np.asarray(a_SU, np.float64), np.asarray(b_SU, np.float64)
    _check(a, b, metric)
    if not 0 < level < 1 or n_bootstrap < 100:
        raise ValueError(f"level must be in (0, 1) and n_bootstrap >= 100, got {level}, {n_bootstrap}")
    n_users = a.shape[1]
    rng = np.random.default_rng(seed)
    # [B, U] resampling counts of users, shared by both models (the pairing).
    user_w = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_bootstrap).astype(np.float64)
    ratio = metric == "ne"
    if ratio:
        if labels_U is None:
            raise ValueError("metric 'ne' needs labels_U, the users' labels")
        y = np.asarray(labels_U, np.float64)
        if y.shape != (n_users,):
            raise ValueError(f"labels_U must have shape ({n_users},), got {y.shape}")
        base_B = _binary_entropy(user_w @ y / n_users)  # [B]
        point_base = float(_binary_entropy(np.array([y.mean()]))[0])

    scale = 1.0 / point_base if ratio else 1.0

    def users_resampled(values_SU: Array) -> Array:
        """[B]: the seed-averaged metric on each replicate's users."""
        means = values_SU.mean(axis=0) @ user_w.T / n_users
        return means / base_B if ratio else means

    def seed_variance(values_SU: Array) -> float:
        """tau^2: the variance of the seed average from seed effects, net of per-user noise."""
        n_seeds = values_SU.shape[0]
        if n_seeds < 2:
            return 0.0
        between = float(np.var(values_SU.mean(axis=1), ddof=1))
        noise = float(np.mean(np.var(values_SU, axis=0, ddof=1))) / n_users
        return max(0.0, between - noise) * scale**2 / n_seeds

    tau_a, tau_b = seed_variance(a), seed_variance(b)
    tau = math.sqrt(tau_a + tau_b)
    # Student-t draws with Welch-Satterthwaite degrees of freedom: tau^2 is estimated from a few
    # seeds, and a normal term undercovers when seed effects dominate (checked by simulation).
    dof_terms = [(t, s - 1) for t, s in ((tau_a, a.shape[0]), (tau_b, b.shape[0])) if t > 0 and s > 1]
    dof = (tau**4 / sum(t * t / d for t, d in dof_terms)) if dof_terms else math.inf
    seed_draws = rng.standard_t(dof, n_bootstrap) if math.isfinite(dof) else rng.normal(0.0, 1.0, n_bootstrap)
    deltas = users_resampled(a) - users_resampled(b) + seed_draws * tau
    estimate = float((a.mean() - b.mean()) * scale)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(deltas, [tail, 1.0 - tail])
    p = 2.0 * min(float(np.mean(deltas <= 0.0)), float(np.mean(deltas >= 0.0)))
    p = min(1.0, max(p, 1.0 / n_bootstrap))
    return PairedDifference(
        metric=metric, estimate=estimate, interval=(float(lo), float(hi)), level=level, p_value=p, n_users=n_users,
        n_seeds=(a.shape[0], b.shape[0]), n_bootstrap=n_bootstrap,
    )


def describe(d: PairedDifference, names: tuple[str, str] = ("A", "B")) -> str:
    """One line: the difference, its interval and whether it is significant."""
    verdict = "significant" if d.significant else "not significant"
    return (f"{d.metric}: {names[0]} - {names[1]} = {d.estimate:+.4f} ({d.level:.0%} CI {d.interval[0]:+.4f} to "
            f"{d.interval[1]:+.4f}; p = {d.p_value:.3g}, {verdict})")


__all__ = ["PairedDifference", "binary_cross_entropy", "describe", "paired_difference", "rank_metrics"]

