"""Vectorised variable-projection least squares for y = asym + sign * A * x^(-alpha).

For fixed alpha the model is linear in (asym, A), so with A >= 0 the best (asym, A) and the
residual sum of squares have a closed form; what is left is a 1-D search over alpha. Doing that
search for B weighted data sets at once (a log grid of alpha, then golden-section refinement in
the bracketing grid cells) refits B bootstrap resamples in a few numpy array operations, where a
`least_squares` call per resample would cost ~10 ms each. It minimises the same objective as the
main fit; `analysis.powerlaw` also uses it as one of its starting points.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt

from analysis.resample import group_weights

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
# At alpha = 0 only asym + A is identified, so the lower bound sits just above it; above 5 the
# curve changes by > 1e10 over two decades of compute, indistinguishable from a step.
ALPHA_BOUNDS = (1e-4, 5.0)
MIN_BOOTSTRAP_FOR_INTERVALS = 20
_PROFILE_GRID = np.geomspace(*ALPHA_BOUNDS, 121)
_GOLDEN_ITERS = 48  # shrinks the bracket by 0.618^48 ~ 1e-10
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _solve_linear(
    sw: Array, swy: Array, syy: Array, swz: Array, swzz: Array, swyz: Array, sign: float
) -> tuple[Array, Array, Array]:
    """Closed-form (asym, A, rss) for fixed alpha from weighted sums of y and z (broadcasting).

    z = x^-alpha - 1 (computed with expm1, which keeps precision at small alpha), so the model
    is y = (asym + sign A) + sign A z.
    """
    syz = swyz - swy * swz / sw
    szz = np.maximum(swzz - swz**2 / sw, np.finfo(np.float64).tiny)
    amp = np.maximum(sign * syz / szz, 0.0)  # A >= 0: a wrong-signed trend gives a flat curve
    rss = np.maximum(syy - amp * sign * syz, 0.0)
    asym = swy / sw - sign * amp * swz / sw - sign * amp
    return asym, amp, rss


def profile_fit(lnx_n: Array, y_n: Array, w_Bn: Array, sign: float) -> Array:
    """Least squares for B weightings of the n points -> params [B, 3] = (asym, A, alpha).

    lnx_n: ln(C / C0) per point; w_Bn: non-negative weights (bootstrap multiplicities, or ones).
    """
    sw, swy = w_Bn.sum(1), w_Bn @ y_n
    syy = w_Bn @ y_n**2 - swy**2 / sw
    wy = w_Bn * y_n
    z_Gn = np.expm1(-_PROFILE_GRID[:, None] * lnx_n[None, :])
    _, _, rss_BG = _solve_linear(
        sw[:, None], swy[:, None], syy[:, None], w_Bn @ z_Gn.T, w_Bn @ (z_Gn**2).T, wy @ z_Gn.T, sign
    )
    k = np.argmin(rss_BG, axis=1)

    def profile(alpha_B: Array) -> tuple[Array, Array, Array]:
        z = np.expm1(-alpha_B[:, None] * lnx_n[None, :])
        return _solve_linear(sw, swy, syy, (w_Bn * z).sum(1), (w_Bn * z**2).sum(1), (wy * z).sum(1), sign)

    lo = _PROFILE_GRID[np.maximum(k - 1, 0)]
    hi = _PROFILE_GRID[np.minimum(k + 1, _PROFILE_GRID.size - 1)]
    for _ in range(_GOLDEN_ITERS):
        c, d = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
        left = profile(c)[2] < profile(d)[2]
        hi, lo = np.where(left, d, hi), np.where(left, lo, c)
    alpha = 0.5 * (lo + hi)
    # Where the bracket was not unimodal the search can lose to its own grid point; keep the better.
    alpha = np.where(profile(alpha)[2] <= rss_BG[np.arange(k.size), k], alpha, _PROFILE_GRID[k])
    asym, amp, _ = profile(alpha)
    return np.stack([asym, amp, alpha], axis=1)


def bootstrap_fits(
    lnx_n: Array, c_n: Array, y_n: Array, sign: float, n_bootstrap: int, seed: int,
    group_idx: npt.NDArray[np.intp] | None = None,
) -> tuple[Array, int]:
    """Refit `n_bootstrap` resamples of the runs -> (params [B_used, 3], number skipped).

    `group_idx` [n] (see `analysis.resample`) resamples whole replicate groups instead of runs.
    Resamples with fewer than 3 distinct compute values cannot constrain 3 parameters; they are
    skipped (not redrawn, so the count stays an honest diagnostic of how thin the data are).
    """
    if n_bootstrap == 0:
        return np.empty((0, 3)), 0
    n = c_n.size
    # Multinomial counts are exactly the multiplicities of a resample drawn with replacement.
    w_Bn = group_weights(n, group_idx, n_bootstrap, np.random.default_rng(seed))
    _, group = np.unique(c_n, return_inverse=True)
    onehot = np.zeros((n, group.max() + 1))
    onehot[np.arange(n), group] = 1.0
    ok = ((w_Bn @ onehot) > 0).sum(1) >= 3
    n_degenerate = int((~ok).sum())
    if n_degenerate:
        log.info("bootstrap: skipped %d of %d resamples with < 3 distinct FLOPs", n_degenerate, n_bootstrap)
    if n_bootstrap - n_degenerate < MIN_BOOTSTRAP_FOR_INTERVALS:
        log.warning(
            "only %d usable bootstrap resamples (< %d): intervals and bands are not reported",
            n_bootstrap - n_degenerate, MIN_BOOTSTRAP_FOR_INTERVALS,
        )
    if not ok.any():
        return np.empty((0, 3)), n_degenerate
    return profile_fit(lnx_n, y_n, w_Bn[ok], sign), n_degenerate
