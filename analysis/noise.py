"""Run-to-run noise estimated from a fit's residuals, and parametric resamples drawn from it.

Why not resample the runs: with 8 runs and 3 parameters the bootstrap over runs (and any interval
that plugs in the raw residual spread) ignores that the noise SD is itself estimated from 5
degrees of freedom; its 95% "new run" intervals covered 81% in simulation. Here the noise SD is
estimated with ddof = number of parameters, s^2 = RSS / (n - p), and every resample draws its own
SD from the scaled chi-square that estimate implies, sigma_b = s sqrt(df / chi2_df), before
drawing Gaussian noise with it. For a model linear in its parameters the resulting draws of
(parameters, new run) are exactly the t-based confidence and prediction intervals; for the
saturating law a refit of each resample carries the same calibration through the nonlinearity.
Coverage is checked by simulation in tests/unit/test_analysis_coverage.py.

Seed replicates (`group_idx`): runs of one config share everything but the seed, so their
residuals are correlated (a config-level effect). The curve then moves with the config means:
their residual spread s_G^2 = sum_g rbar_g^2 / (G - p) on G - p degrees of freedom sets the
resample noise, drawn once per config and shared by its runs. One new run (a new config, one
seed) adds the within-config variance the config mean averaged away: its SD is
sqrt(sigma_b^2 + s_w^2 (1 - mean(1 / m_g))), s_w the pooled within-config SD.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Literal

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
Space = Literal["metric", "log"]  # additive noise in the metric, or in ln(metric) (pure power law)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class NoiseModel:
    sd_curve: float  # SD of the noise that moves the curve: one run, or one config mean with groups
    df: int  # degrees of freedom of sd_curve: n - p, or G - p with replicate groups
    sd_extra: float  # what one new run adds beyond a config mean (0 without groups)
    n_params: int
    unit: str  # "run" or "replicate group (config)"
    space: Space = "metric"

    @property
    def sd_new_run(self) -> float:
        """Point estimate of one new run's SD about the curve (metric units, or ln units for "log")."""
        return math.hypot(self.sd_curve, self.sd_extra)

    def draw_sd(self, n_draws: int, rng: np.random.Generator) -> tuple[Array, Array]:
        """(curve-noise SD, new-run SD) per draw -> ([S], [S]); SD uncertainty from chi2_df."""
        scale = self.sd_curve * np.sqrt(self.df / rng.chisquare(self.df, n_draws))
        return scale, np.sqrt(scale**2 + self.sd_extra**2)

    def resample(
        self, fitted_n: Array, group_idx: npt.NDArray[np.intp] | None, n_draws: int, rng: np.random.Generator
    ) -> tuple[Array, Array]:
        """Parametric resamples of the data -> (y* [S, n], new-run SD [S]); noise shared within a group."""
        scale, new_sd = self.draw_sd(n_draws, rng)
        if group_idx is None or self.unit == "run":
            z = rng.normal(size=(n_draws, fitted_n.size))
        else:
            z = rng.normal(size=(n_draws, int(group_idx.max()) + 1))[:, group_idx]
        return fitted_n[None, :] + scale[:, None] * z, new_sd

    def to_dict(self) -> dict[str, float | int | str]:
        return {"sd_new_run": self.sd_new_run, "sd_curve": self.sd_curve, "df": self.df,
                "sd_within_extra": self.sd_extra, "n_params": self.n_params, "unit": self.unit, "space": self.space}


def estimate_noise(
    residuals_n: Array, n_params: int, group_idx: npt.NDArray[np.intp] | None = None, space: Space = "metric"
) -> NoiseModel:
    """The noise model of a fit with `n_params` parameters from its residuals (observed - fitted).

    With too few replicate groups to leave a degree of freedom (G <= p) the groups are ignored,
    with a warning: the curve's uncertainty is then understated if replicates are correlated.
    """
    r = np.asarray(residuals_n, np.float64)
    n = r.size
    if n <= n_params:
        raise ValueError(f"{n} residuals leave no degree of freedom for a {n_params}-parameter fit")
    if group_idx is not None:
        n_groups = int(group_idx.max()) + 1
        if n_groups > n_params and n_groups < n:
            counts = np.bincount(group_idx, minlength=n_groups).astype(np.float64)
            means = np.bincount(group_idx, weights=r, minlength=n_groups) / counts
            within = float(np.sum((r - means[group_idx]) ** 2)) / (n - n_groups)
            sd_curve = math.sqrt(float(np.sum(means**2)) / (n_groups - n_params))
            extra = math.sqrt(within * max(1.0 - float(np.mean(1.0 / counts)), 0.0))
            return NoiseModel(sd_curve=sd_curve, df=n_groups - n_params, sd_extra=extra, n_params=n_params,
                              unit="replicate group (config)", space=space)
        if n_groups <= n_params:
            log.warning("only %d replicate groups for %d parameters: noise is estimated per run, so "
                        "intervals ignore the correlation of seed replicates", n_groups, n_params)
    return NoiseModel(sd_curve=math.sqrt(float(r @ r) / (n - n_params)), df=n - n_params, sd_extra=0.0,
                      n_params=n_params, unit="run", space=space)
