"""The metric as a function of training FLOPs, for one fit and each of its bootstrap refits.

Every form reduces to one of three curve families in C, which can be evaluated, differentiated
and inverted in closed form for all bootstrap rows at once:

  saturating:  y = p0 + sign * p1 * (C / c0)^(-p2)   (power law; and the two-variable law along
               its compute-optimal frontier, where L_opt(C) = E + K (C / k)^(-gamma))
  log_linear:  y = p0 + p1 * ln C
  pure_power:  y = exp(p0 + p1 * ln(C / c0))

A `CurveFamily` holds the point-estimate row, the resampled rows (parametric draws for the
one-variable forms, bootstrap refits for the two-variable law), the new-run noise SD paired with
each row, and the fit's residuals (metric units, observed - fitted), so forecasts can give both the
interval of the fitted curve and the wider interval for one new run: each curve draw plus Gaussian
noise with its own SD (`analysis.noise`), never a resampled raw residual, whose spread ignores
the degrees of freedom the fit used. Values are clipped to the metric's range (`analysis.bounds`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import numpy.typing as npt

from analysis.bounds import UNBOUNDED, MetricBounds
from analysis.noise import NoiseModel, estimate_noise

Array = npt.NDArray[np.float64]
Kind = Literal["saturating", "log_linear", "pure_power"]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CurveFamily:
    kind: Kind
    point: Array  # [P]
    draws: Array  # [S, P] bootstrap refits (S may be 0)
    c0: float = 1.0
    sign: float = 1.0  # saturating only: +1 falls towards p0 (loss-like), -1 rises (quality)
    higher_is_better: bool = True
    residuals: Array = dataclasses.field(default_factory=lambda: np.empty(0))
    description: str = ""
    # New-run noise SD per draw [S] (metric units; ln units when noise_space is "log"). Empty: derived
    # from the residuals with ddof = P and a chi-square draw of the SD per row (`new_run`).
    noise_sd: Array = dataclasses.field(default_factory=lambda: np.empty(0))
    noise_space: Literal["metric", "log"] = "metric"
    bounds: MetricBounds = UNBOUNDED
    n_params: int = 0  # parameters the fit used (0: the curve's own P; the frontier curve's fit has 5)
    noise: NoiseModel | None = None  # the fit's noise model (replicate-aware); None: from the residuals

    @property
    def fit_params(self) -> int:
        return self.n_params or self.point.size

    def new_run(self, flops_M: Array, rng: np.random.Generator) -> Array:
        """One simulated new run per draw at each FLOPs -> [S, M], clipped to the metric's range."""
        curves = self.values(self.draws, flops_M)
        sd = self.noise_sd
        if sd.size != self.draws.shape[0]:
            if self.residuals.size <= self.fit_params:
                return np.full(curves.shape, np.nan)
            sd = estimate_noise(self.residuals, self.fit_params).draw_sd(self.draws.shape[0], rng)[1]
        z = sd[:, None] * rng.normal(size=curves.shape)
        with np.errstate(over="ignore", invalid="ignore"):
            noisy = curves * np.exp(z) if self.noise_space == "log" else curves + z
        return self.bounds.clip(noisy)

    def in_bounds(self, flops_M: Array) -> npt.NDArray[np.bool_]:
        """Whether the point-estimate curve stays inside the metric's range at each FLOPs -> [M]."""
        return self.bounds.contains(self.values(self.point[None, :], flops_M)[0])

    def values(self, rows_SP: Array, flops_M: Array) -> Array:
        """Metric for parameter rows at FLOPs -> [S, M]."""
        c = np.asarray(flops_M, np.float64)[None, :]
        p = rows_SP
        with np.errstate(over="ignore", invalid="ignore"):
            if self.kind == "saturating":
                return p[:, 0:1] + self.sign * p[:, 1:2] * np.exp(-p[:, 2:3] * np.log(c / self.c0))
            if self.kind == "log_linear":
                return p[:, 0:1] + p[:, 1:2] * np.log(c)
            return np.exp(p[:, 0:1] + p[:, 1:2] * np.log(c / self.c0))

    def slope(self, rows_SP: Array, flops_M: Array) -> Array:
        """d metric / d C (per FLOP) -> [S, M]."""
        c = np.asarray(flops_M, np.float64)[None, :]
        p = rows_SP
        with np.errstate(over="ignore", invalid="ignore"):
            if self.kind == "saturating":
                return -self.sign * p[:, 1:2] * p[:, 2:3] * np.exp(-p[:, 2:3] * np.log(c / self.c0)) / c
            if self.kind == "log_linear":
                return p[:, 1:2] / c
            return p[:, 1:2] * self.values(rows_SP, flops_M) / c

    def flops_for(self, rows_SP: Array, target: float) -> Array:
        """FLOPs at which each curve reaches `target` -> [S]; inf where it never does.

        "Never" means: beyond the asymptote (saturating), or a curve that does not improve with
        compute (a slope of the wrong sign). A target the curve already passed gives FLOPs below
        the data, which is the honest answer (it is reached by any larger run).
        """
        p = rows_SP
        better = 1.0 if self.higher_is_better else -1.0
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.kind == "saturating":
                ratio = self.sign * (target - p[:, 0]) / p[:, 1]
                improving = (-self.sign * better > 0) & (p[:, 1] > 0)
                out = self.c0 * np.exp(-np.log(ratio) / p[:, 2])
                out = np.where(improving & (ratio > 0), out, np.inf)
            elif self.kind == "log_linear":
                out = np.where(p[:, 1] * better > 0, np.exp((target - p[:, 0]) / p[:, 1]), np.inf)
            else:
                if target <= 0:
                    return np.full(p.shape[0], np.inf)
                out = np.where(p[:, 1] * better > 0, self.c0 * np.exp((np.log(target) - p[:, 0]) / p[:, 1]), np.inf)
        return np.where(np.isnan(out), np.inf, out)

    @property
    def asymptote(self) -> float | None:
        """The best value the point-estimate curve approaches (None: it has no asymptote)."""
        return float(self.point[0]) if self.kind == "saturating" else None
