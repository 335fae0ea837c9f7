"""Least squares for the saturating law y = asym + sign * A * x^(-alpha): variable projection, vectorised
over data sets (`profile_fit`, the bootstrap refits), and multi-start trust region (`least_squares_fit`,
the main fit of `analysis.powerlaw`, started from `local_starts` and the variable-projection optimum).

For fixed alpha the model is linear in (asym, A), so with A >= 0 (and, for a bounded metric, the
asymptote on the right side of the metric's bound: y_max <= 1 for HR/NDCG, E >= 0 for NE) the
best (asym, A) and the residual sum of squares have a closed form; what is left is a 1-D search
over alpha. Doing that search for B data sets at once (a log grid of alpha, then golden-section
refinement in the bracketing grid cells) refits B resamples in a few numpy array operations, where
a `least_squares` call per resample would cost ~10 ms each. It minimises the same objective as the
main fit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.optimize import OptimizeResult, least_squares

from analysis.progress import batches
from analysis.resample import group_weights

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
# At alpha = 0 only asym + A is identified, so the lower bound sits just above it; above 5 the
# curve changes by > 1e10 over two decades of compute, indistinguishable from a step.
ALPHA_BOUNDS = (1e-4, 5.0)
MIN_BOOTSTRAP_FOR_INTERVALS = 20
_PROFILE_GRID = np.geomspace(*ALPHA_BOUNDS, 121)
_GOLDEN_ITERS = 44  # shrinks the bracket (two grid cells, x1.18 each) by 0.618^44 ~ 6e-10
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
BOOTSTRAP_BATCH = 500  # data sets per profile_fit call in `profile_fit_batches`: one progress step


@dataclasses.dataclass(frozen=True, slots=True)
class _Data:
    """The alpha-independent parts of the weighted problem, for arrays that broadcast to [..., n]."""

    w: Array
    yc: Array  # y - weighted mean
    ybar: Array
    sw: Array
    syy: Array  # sum w yc^2
    yb: Array | None  # y - bound (None without a bound)
    sbb: Array | None  # sum w yb^2

    def rows(self, sl: slice) -> _Data:
        """Rows `sl`, with a grid axis inserted before the points: arrays [rows, 1, (n)]."""
        def pick(a: Array | None) -> Array | None:
            return None if a is None else a[sl, None]

        return _Data(w=self.w[sl, None], yc=self.yc[sl, None], ybar=self.ybar[sl, None], sw=self.sw[sl, None],
                     syy=self.syy[sl, None], yb=pick(self.yb), sbb=pick(self.sbb))

    @classmethod
    def of(cls, w: Array, y: Array, bound: float | None) -> _Data:
        sw = w.sum(-1)
        ybar = (w * y).sum(-1) / sw
        yc = y - ybar[..., None]
        yb = None if bound is None else y - bound
        return cls(w=w, yc=yc, ybar=ybar, sw=sw, syy=(w * yc * yc).sum(-1), yb=yb,
                   sbb=None if yb is None else (w * yb * yb).sum(-1))


def _solve_linear(d: _Data, z: Array, sign: float, asym_bound: float | None) -> tuple[Array, Array, Array]:
    """Constrained (asym, A, rss) for fixed alpha; `z` broadcasts against d's [..., n].

    z = x^-alpha - 1 (computed with expm1, which keeps precision at small alpha), so the model is
    y = (asym + sign A) + sign A z. The feasible set is A >= 0 and, with `asym_bound`,
    sign * (asym - bound) >= 0 (sign -1: y rises to asym <= bound; +1: falls to asym >= bound).
    The minimiser over A >= 0 alone (A = 0 is the flat line at the mean) is optimal if it also
    respects the bound; otherwise the optimum of this convex problem lies on the bound, where A
    is fitted alone. The RSS uses centred sums: rss = syy - syz^2 / szz can lose relative (never
    absolute) precision, because by Cauchy-Schwarz the subtracted term never exceeds syy.
    """
    w = d.w
    zbar = (w * z).sum(-1) / d.sw
    dz = z - zbar[..., None]
    szz = np.maximum((w * dz * dz).sum(-1), np.finfo(np.float64).tiny)
    syz = sign * (w * d.yc * dz).sum(-1)
    amp = np.maximum(syz / szz, 0.0)
    rss = np.maximum(d.syy - amp * syz, 0.0)
    asym = d.ybar - sign * amp * (zbar + 1.0)
    if asym_bound is None or d.yb is None or d.sbb is None:
        return asym, amp, rss
    u = z + 1.0
    sbu = sign * (w * d.yb * u).sum(-1)
    amp_b = np.maximum(sbu / np.maximum((w * u * u).sum(-1), np.finfo(np.float64).tiny), 0.0)
    rss_b = np.maximum(d.sbb - amp_b * sbu, 0.0)
    edge = sign * (asym - asym_bound) < 0.0
    return np.where(edge, asym_bound, asym), np.where(edge, amp_b, amp), np.where(edge, rss_b, rss)


def profile_fit(lnx_n: Array, y_n: Array, w_Bn: Array, sign: float, asym_bound: float | None = None) -> Array:
    """Least squares for B data sets of the n points -> params [B, 3] = (asym, A, alpha).

    lnx_n: ln(C / C0) per point; y_n: [n] shared values or [B, n] one data set per row (a
    parametric resample); w_Bn: non-negative weights (bootstrap multiplicities, or ones), [B, n]
    or [1, n]. `asym_bound` constrains the asymptote (see `_solve_linear`).
    """
    y_Bn = np.atleast_2d(np.asarray(y_n, np.float64))
    n_rows = max(y_Bn.shape[0], w_Bn.shape[0])
    data = _Data.of(np.broadcast_to(w_Bn, (n_rows, lnx_n.size)), np.broadcast_to(y_Bn, (n_rows, lnx_n.size)),
                    asym_bound)
    # Grid pass, chunked over rows so [rows, grid, n] stays a few MB.
    k = np.empty(n_rows, dtype=np.intp)
    rss_grid = np.empty(n_rows)
    z_Gn = np.expm1(-_PROFILE_GRID[:, None] * lnx_n[None, :])
    step = max(1, 2**18 // (_PROFILE_GRID.size * lnx_n.size))
    for s in range(0, n_rows, step):
        sl = slice(s, s + step)
        chunk = data.rows(sl)
        _, _, rss_bg = _solve_linear(chunk, z_Gn[None], sign, asym_bound)
        k[sl] = np.argmin(rss_bg, axis=1)
        rss_grid[sl] = rss_bg[np.arange(k[sl].size), k[sl]]

    def rss_at(alpha_B: Array) -> Array:
        return _solve_linear(data, np.expm1(-alpha_B[:, None] * lnx_n[None, :]), sign, asym_bound)[2]

    # Golden-section search in the bracketing grid cells, one new evaluation per iteration.
    lo = _PROFILE_GRID[np.maximum(k - 1, 0)]
    hi = _PROFILE_GRID[np.minimum(k + 1, _PROFILE_GRID.size - 1)]
    c, d = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fc, fd = rss_at(c), rss_at(d)
    for _ in range(_GOLDEN_ITERS):
        left = fc < fd  # the minimum is in [lo, d]
        hi, lo = np.where(left, d, hi), np.where(left, lo, c)
        new = np.where(left, hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo))
        fnew = rss_at(new)
        c, d, fc, fd = (np.where(left, new, d), np.where(left, c, new),
                        np.where(left, fnew, fd), np.where(left, fc, fnew))
    alpha = 0.5 * (lo + hi)
    # Where the bracket was not unimodal the search can lose to its own grid point; keep the better.
    alpha = np.where(rss_at(alpha) <= rss_grid, alpha, _PROFILE_GRID[k])
    asym, amp, _ = _solve_linear(data, np.expm1(-alpha[:, None] * lnx_n[None, :]), sign, asym_bound)
    return np.stack([asym, amp, alpha], axis=1)


def profile_fit_batches(
    lnx_n: Array, y_n: Array, w_Bn: Array, sign: float, asym_bound: float | None = None, *,
    desc: str = "power-law bootstrap",
) -> Array:
    """`profile_fit` of many data sets in batches of rows, with progress (`analysis.progress`).

    The rows are independent problems (the golden-section search runs per row), so batching
    changes nothing in the result; it only gives the progress bar steps and bounds the memory.
    """
    y_Bn = np.atleast_2d(np.asarray(y_n, np.float64))
    if y_Bn.shape[0] == 0 or w_Bn.shape[0] == 0:
        return np.empty((0, 3))
    n_rows = max(y_Bn.shape[0], w_Bn.shape[0])
    parts = [
        profile_fit(lnx_n, y_Bn[sl] if y_Bn.shape[0] > 1 else y_Bn, w_Bn[sl] if w_Bn.shape[0] > 1 else w_Bn,
                    sign, asym_bound)
        for sl in batches(n_rows, BOOTSTRAP_BATCH, desc=desc, unit="refit")
    ]
    return np.concatenate(parts) if parts else np.empty((0, 3))


def n_distinct(w_Bn: Array, values_n: Array) -> npt.NDArray[np.intp]:
    """Distinct values among the runs each resample draws (weight > 0) -> [B]."""
    _, inv = np.unique(values_n, return_inverse=True)
    onehot = np.zeros((values_n.size, inv.max() + 1))
    onehot[np.arange(values_n.size), inv] = 1.0
    return ((w_Bn @ onehot) > 0).sum(1)


def bootstrap_fits(
    lnx_n: Array, c_n: Array, y_n: Array, sign: float, n_bootstrap: int, seed: int,
    group_idx: npt.NDArray[np.intp] | None = None, asym_bound: float | None = None,
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
    ok = n_distinct(w_Bn, c_n) >= 3
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
    return profile_fit_batches(lnx_n, y_n, w_Bn[ok], sign, asym_bound), n_degenerate


def least_squares_fit(
    lnx: Array, y: Array, sign: float, starts: Sequence[Array], asym_bounds: tuple[float, float]
) -> tuple[OptimizeResult, int, int]:
    """Trust-region least squares (analytic Jacobian) from each start; the best wins.

    -> (result, starts that reached its cost, starts tried).
    """
    def residuals(p: Array) -> Array:
        return p[0] + sign * p[1] * np.exp(-p[2] * lnx) - y

    def jacobian(p: Array) -> Array:
        z = np.exp(-p[2] * lnx)
        return np.stack([np.ones_like(z), sign * z, -sign * p[1] * z * lnx], axis=1)

    lower = np.array([asym_bounds[0], 0.0, ALPHA_BOUNDS[0]])
    upper = np.array([asym_bounds[1], np.inf, ALPHA_BOUNDS[1]])
    results = [
        least_squares(
            residuals, np.clip(x0, lower, upper), jac=jacobian, bounds=(lower, upper), method="trf", x_scale="jac",
            ftol=1e-10, xtol=1e-10, gtol=1e-10, max_nfev=3000,
        )
        for x0 in starts
    ]
    best = min(results, key=lambda r: r.cost)
    agree = sum(r.cost <= best.cost * (1 + 1e-6) + 1e-15 for r in results)
    return best, agree, len(results)


def local_starts(
    lnx: Array, y: Array, sign: float, alphas: Sequence[float], gaps: Sequence[float], asym_bounds: tuple[float, float]
) -> list[Array]:
    """Start rows (asym, A, alpha): each alpha x each asymptote beyond the best value by gap x the range, A by
    linear least squares there."""
    span = float(np.ptp(y))
    edge = float(np.min(y)) if sign > 0 else float(np.max(y))
    starts = []
    for alpha in alphas:
        if not ALPHA_BOUNDS[0] <= alpha <= ALPHA_BOUNDS[1]:
            raise ValueError(f"start_alphas must lie in {ALPHA_BOUNDS}, got {alpha}")
        z = np.exp(-alpha * lnx)
        for gap in gaps:
            asym = float(np.clip(edge - sign * gap * span, *asym_bounds))
            amp = max(sign * float(np.dot(y - asym, z)) / float(np.dot(z, z)), 1e-6)
            starts.append(np.array([asym, amp, alpha]))
    return starts
