"""Batched, box-constrained L-BFGS in numpy: many small independent problems stepped in lockstep.

Bootstrap refits of the two-variable law are B independent 5-parameter problems that share the
data and differ only in the point weights. A `scipy.optimize.minimize` call per resample costs a
few milliseconds of Python overhead; stepping all B problems at once costs one array operation
per step for all of them, so 1,000 refits take about as long as a few dozen scipy calls.

The algorithm is textbook L-BFGS (Nocedal & Wright, algorithm 7.4, two-loop recursion with the
gamma = s'y / y'y initial scaling) with two simplifications for boxes: the search direction is
zeroed on variables held at a bound by their gradient, and trial points are projected onto the
box (projected backtracking under the Armijo condition). That is the projected-gradient variant,
not L-BFGS-B's Cauchy point; it reaches the same optimum when bounds are inactive at it, which
is the case the main fit (scipy's L-BFGS-B) certifies, and bound-hitting resamples are flagged.

Stopping rules mirror scipy's L-BFGS-B: projected gradient inf-norm <= gtol, or relative decrease
(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol. A problem whose line search cannot decrease f any
more (the optimum is reached to float precision) is stopped and counted as converged when its
projected gradient is also small; otherwise it is reported as not converged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
# fg(x [K, P], rows [K] int): objective [K] and gradient [K, P] of the problems `rows` at x.
BatchObjective = Callable[[Array, npt.NDArray[np.intp]], tuple[Array, Array]]

_ARMIJO_C1 = 1e-4
_MAX_HALVINGS = 40


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class BatchResult:
    x: Array  # [B, P]
    f: Array  # [B]
    converged: npt.NDArray[np.bool_]  # [B]
    n_iter: npt.NDArray[np.int64]  # [B]
    projected_grad: Array  # [B] inf-norm at the end


def _projected_grad(x: Array, g: Array, lo: Array, hi: Array) -> Array:
    """Inf-norm of the projected gradient (as L-BFGS-B's pgtol uses it) -> [K]."""
    return np.max(np.abs(np.clip(x - g, lo, hi) - x), axis=1)


def minimize_batch(
    fg: BatchObjective,
    x0: Array,
    lower: Array,
    upper: Array,
    *,
    max_iter: int = 1000,
    memory: int = 10,
    gtol: float = 1e-8,
    ftol: float = 1e-12,
    stall_gtol: float = 1e-4,
) -> BatchResult:
    """Minimise B independent problems from starts x0 [B, P] within lower <= x <= upper ([P] each).

    `stall_gtol` is the projected-gradient size below which a problem whose line search can no
    longer decrease f still counts as converged (float-precision floor of a kinked loss).
    """
    lo, hi = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    x = np.clip(np.array(x0, dtype=np.float64), lo, hi)
    n_prob, n_par = x.shape
    f, g = fg(x, np.arange(n_prob))
    s_hist = np.zeros((memory, n_prob, n_par))
    y_hist = np.zeros((memory, n_prob, n_par))
    rho = np.zeros((memory, n_prob))  # 0 marks an empty or rejected slot: a no-op in the recursion
    gamma = np.ones(n_prob)
    done = _projected_grad(x, g, lo, hi) <= gtol
    converged = done.copy()
    n_iter = np.zeros(n_prob, dtype=np.int64)

    for it in range(max_iter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        # The direction is computed for every problem (finished ones are ignored below): whole-array
        # views are cheaper than gathering the active rows of each history slot.
        free_all = ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))
        q = g * free_all
        order = [(it - 1 - j) % memory for j in range(min(it, memory))]
        alphas = []
        for slot in order:  # two-loop recursion, newest slot first (all problems step together)
            a = rho[slot] * np.einsum("kp,kp->k", s_hist[slot], q)
            q -= a[:, None] * y_hist[slot]
            alphas.append(a)
        r = gamma[:, None] * q
        for slot, a in zip(reversed(order), reversed(alphas)):
            b = rho[slot] * np.einsum("kp,kp->k", y_hist[slot], r)
            r += s_hist[slot] * (a - b)[:, None]
        xa, ga, free = x[act], g[act], free_all[act]
        d = -r[act] * free
        slope = np.einsum("kp,kp->k", ga, d)
        bad = ~(slope < 0)
        d[bad] = -(ga * free)[bad]
        if it == 0:
            # First step: no curvature yet; a unit-length step in parameter space.
            d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300)

        # Projected Armijo backtracking, all active problems at once.
        t = np.ones(act.size)
        accepted = np.zeros(act.size, dtype=bool)
        x_new, f_new, g_new = xa.copy(), f[act].copy(), ga.copy()
        for _ in range(_MAX_HALVINGS):
            pend = np.flatnonzero(~accepted)
            if pend.size == 0:
                break
            xt = np.clip(xa[pend] + t[pend, None] * d[pend], lo, hi)
            ft, gt = fg(xt, act[pend])
            ok = ft <= f[act[pend]] + _ARMIJO_C1 * np.einsum("kp,kp->k", ga[pend], xt - xa[pend])
            ok &= np.isfinite(ft)
            sel = pend[ok]
            x_new[sel], f_new[sel], g_new[sel] = xt[ok], ft[ok], gt[ok]
            accepted[sel] = True
            t[pend[~ok]] *= 0.5

        slot = it % memory
        s = x_new - xa
        yv = g_new - ga
        sy = np.einsum("kp,kp->k", s, yv)
        yy = np.einsum("kp,kp->k", yv, yv)
        keep = accepted & (sy > 1e-10 * np.sqrt(np.einsum("kp,kp->k", s, s) * yy))
        s_hist[slot, act] = s
        y_hist[slot, act] = yv
        rho[slot] = 0.0  # finished problems: a no-op slot
        rho[slot, act] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
        gamma[act] = np.where(keep, sy / np.where(keep, yy, 1.0), gamma[act])

        f_old = f[act]
        x[act], f[act], g[act] = x_new, f_new, g_new
        n_iter[act] += 1
        pg = _projected_grad(x_new, g_new, lo, hi)
        small_gradient = pg <= gtol
        small_decrease = accepted & ((f_old - f_new) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(f_new)), 1.0))
        stalled = ~accepted
        finished = small_gradient | small_decrease | stalled
        converged[act] = small_gradient | small_decrease | (stalled & (pg <= stall_gtol))
        done[act] = finished

    f_end = f
    pg_end = _projected_grad(x, g, lo, hi)
    return BatchResult(x=x, f=f_end, converged=converged & done, n_iter=n_iter, projected_grad=pg_end)
