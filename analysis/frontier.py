"""Compute-optimal allocation from a fitted L(N, D) = E + A/N^alpha + B/D^beta.

With C = k N D (k = 6 here by default: 2 FLOPs per multiply-add x (forward + 2x backward) per
parameter per token; `analysis.study` defaults to the runs' own median C / (N D), 9.9 for HSTU on
ML-100K, and records where k came from), minimising L at
fixed C gives (Hoffmann et al. 2022, eq. 4):
  N_opt(C) = G (C/k)^a,  D_opt(C) = G^-1 (C/k)^b,  G = (alpha A / (beta B))^(1 / (alpha + beta)),
  a = beta / (alpha + beta),  b = alpha / (alpha + beta),
and along that frontier L_opt(C) = E + K (C/k)^-gamma with K = A G^-alpha + B G^beta and
gamma = alpha beta / (alpha + beta): a saturating power law in C (`analysis.powerlaw.PowerLaw`
with c0 = k), which is the two-variable form's curve in C (`in_c`) and what its forecasts use.
Intervals are bootstrap percentiles over the fit's refits. HSTU's exact FLOPs are not k N D (the
attention term grows with sequence length), so k is a convention to state, not a measurement.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from analysis.curves import CurveFamily, float_or_none
from analysis.powerlaw import PowerLaw
from analysis.varpro import MIN_BOOTSTRAP_FOR_INTERVALS

if TYPE_CHECKING:  # analysis.chinchilla imports this module for its curve in C
    from analysis.chinchilla import Chinchilla, ChinchillaFit

Array = npt.NDArray[np.float64]
DEFAULT_FLOPS_PER_ND = 6.0


def frontier_rows(theta_KP: Array, n0: float, d0: float) -> dict[str, Array]:
    """(ln G, a, b, E, ln K, gamma) for normalised parameter rows, computed in logs (no overflow)."""
    alpha, beta = theta_KP[:, 3], theta_KP[:, 4]
    ln_a = theta_KP[:, 0] + alpha * math.log(n0)
    ln_b = theta_KP[:, 1] + beta * math.log(d0)
    s = alpha + beta
    ln_g = (np.log(alpha) + ln_a - np.log(beta) - ln_b) / s
    return {
        "ln_G": ln_g,
        "a": beta / s,
        "b": alpha / s,
        "E": np.exp(theta_KP[:, 2]),
        "ln_K": np.logaddexp(ln_a - alpha * ln_g, ln_b + beta * ln_g),
        "gamma": alpha * beta / s,
    }


def _check_k(flops_per_nd: float) -> float:
    if not (isinstance(flops_per_nd, (int, float)) and math.isfinite(flops_per_nd) and flops_per_nd > 0):
        raise ValueError(f"flops_per_nd (C = k N D) must be a positive number such as 6, got {flops_per_nd!r}")
    return float(flops_per_nd)


def _interval(values: Array, level: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size < MIN_BOOTSTRAP_FOR_INTERVALS:
        return (math.nan, math.nan)
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Frontier:
    flops_per_nd: float
    G: float
    a: float  # N_opt ~ C^a
    b: float  # D_opt ~ C^b
    gamma: float  # L_opt - E ~ C^-gamma
    intervals: dict[str, tuple[float, float]]  # "a", "b", "G", "gamma"
    level: float
    higher_is_better: bool
    fit: ChinchillaFit = dataclasses.field(repr=False, compare=False)

    def n_opt(self, flops: Array | float) -> Array:
        return self.G * (np.asarray(flops, np.float64) / self.flops_per_nd) ** self.a

    def d_opt(self, flops: Array | float) -> Array:
        return (np.asarray(flops, np.float64) / self.flops_per_nd) ** self.b / self.G

    def table(self, flops: Array) -> list[dict[str, Any]]:
        """N_opt, D_opt and the metric at the optimum, with bootstrap intervals, at each budget."""
        c = np.asarray(flops, np.float64)
        boot = frontier_rows(self.fit.bootstrap_theta, self.fit.n0, self.fit.d0)
        curve = frontier_curve(self.fit, self.flops_per_nd)
        metric_draws = curve.values(curve.draws, c) if curve.draws.size else np.empty((0, c.size))
        rows = []
        for j, cj in enumerate(c):
            ln_x = math.log(cj / self.flops_per_nd)
            ln_n = boot["ln_G"] + boot["a"] * ln_x
            ln_d = boot["b"] * ln_x - boot["ln_G"]
            rows.append({
                "flops": float(cj),
                "n_opt": float(self.n_opt(cj)),
                "n_opt_interval": tuple(math.exp(v) if math.isfinite(v) else math.nan for v in _interval(ln_n, self.level)),
                "d_opt": float(self.d_opt(cj)),
                "d_opt_interval": tuple(math.exp(v) if math.isfinite(v) else math.nan for v in _interval(ln_d, self.level)),
                "metric_opt": float(curve.values(curve.point[None, :], np.array([cj]))[0, 0]),
                "metric_opt_interval": _interval(metric_draws[:, j], self.level) if metric_draws.size else (math.nan, math.nan),
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; k itself and where it came from are the study's ("flops_per_nd")."""
        return {
            "convention": f"C = {self.flops_per_nd:g} N D",
            "G": self.G,
            "a": self.a,
            "b": self.b,
            "gamma": self.gamma,
            "intervals": {k: [float_or_none(lo), float_or_none(hi)] for k, (lo, hi) in self.intervals.items()},
            "level": self.level,
            "formula": "N_opt = G (C/k)^a, D_opt = (C/k)^b / G, G = (alpha A / (beta B))^(1/(alpha+beta))",
        }


def compute_frontier(fit: ChinchillaFit, flops_per_nd: float = DEFAULT_FLOPS_PER_ND, level: float | None = None) -> Frontier:
    k = _check_k(flops_per_nd)
    lvl = fit.level if level is None else level
    point = {key: float(v[0]) for key, v in frontier_rows(fit.theta[None, :], fit.n0, fit.d0).items()}
    boot = frontier_rows(fit.bootstrap_theta, fit.n0, fit.d0)
    intervals = {name: _interval(boot[name], lvl) for name in ("a", "b", "gamma")}
    lo, hi = _interval(boot["ln_G"], lvl)
    intervals["G"] = (math.exp(lo), math.exp(hi)) if math.isfinite(lo) else (math.nan, math.nan)
    return Frontier(
        flops_per_nd=k, G=math.exp(point["ln_G"]), a=point["a"], b=point["b"], gamma=point["gamma"],
        intervals=intervals, level=lvl, higher_is_better=fit.higher_is_better, fit=fit,
    )


def in_c(law: Chinchilla, point_P: Array, draws_SP: Array) -> tuple[PowerLaw, Array, Array]:
    """The two-variable law's curve in C: the metric at the compute-optimal (N, D) for C = k N D, a
    saturating law with rows (E, K, gamma) and c0 = k (1 - E for a quality metric); rows whose K
    overflows are dropped."""
    k = _check_k(law.flops_per_nd)

    def rows(theta: Array) -> Array:
        fr = frontier_rows(theta, law.n0, law.d0)
        with np.errstate(over="ignore"):
            out = np.stack([fr["E"], np.exp(fr["ln_K"]), fr["gamma"]], axis=1)
        if law.higher_is_better:
            out[:, 0] = 1.0 - out[:, 0]
        return out[np.all(np.isfinite(out), axis=1)]

    lhs = f"1 - {law.metric_name}" if law.higher_is_better else law.metric_name
    curve = PowerLaw(c0=k, higher_is_better=law.higher_is_better,
                     description=f"{lhs} at the compute-optimal N, D: E + K (C/{k:g})^-gamma")
    return curve, rows(point_P[None, :])[0], rows(draws_SP)


def frontier_curve(fit: ChinchillaFit, flops_per_nd: float = DEFAULT_FLOPS_PER_ND) -> CurveFamily:
    """The fit's metric at the compute-optimal (N, D) as a curve in C with its bootstrap rows."""
    law, point, draws = in_c(fit.law(flops_per_nd), fit.theta, fit.bootstrap_theta)
    return CurveFamily(form=law, point=point, draws=draws)
