"""Two-variable scaling law L(N, D) = E + A / N^alpha + B / D^beta, Chinchilla's approach 3.

N is the non-embedding parameter count, D the number of training tokens. Fitting follows
Hoffmann et al. (2022, appendix D.2) as corrected by Besiroglu et al. (Epoch, 2024):
  log L_hat = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,
  loss = SUM over runs of Huber_delta(log L_hat - log L), delta = 1e-3,
minimised with L-BFGS(-B) from a grid of starts, best kept. The loss is summed, not averaged:
averaging shrinks it and its gradient by 1/n, and L-BFGS's absolute tolerances then stop it early
(Epoch's finding on Hoffmann's fit).

Internally N and D are divided by their geometric means N0, D0 so a, b, e are O(1) and the grid
of starts means the same for any data; the reported A and B are in raw units (A = A' N0^alpha).

For a higher-is-better metric in [0, 1) (HR, NDCG, MRR) the law is fitted to 1 - y, the miss
rate, which falls towards an irreducible E like a loss; predictions are mapped back to y.

Uncertainty: bootstrap over runs (or over replicate groups when `groups` is given), each resample
a weighted refit warm-started at the full-data optimum, all refits stepped together by
`analysis.lbfgs.minimize_batch`; percentile intervals. Resamples with < 3 distinct N or D cannot
identify the exponents and are skipped and counted.

`Chinchilla` is the form's math for parameter rows (`analysis.curves.Form`): the metric at any
(N, D), and as its curve in C the saturating law along the compute-optimal frontier
(`analysis.frontier.in_c`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from analysis.bounds import metric_bounds
from analysis.curves import CurveInC, FormFit, NoiseSpace, float_or_none, percentile_intervals
from analysis.dataset import ScalingData
from analysis.frontier import DEFAULT_FLOPS_PER_ND, in_c
from analysis.inputs import ArrayLike, validate_level, validate_nd_points
from analysis.lbfgs import minimize_batch
from analysis.noise import estimate_noise
from analysis.progress import batches
from analysis.resample import group_index, group_weights
from analysis.varpro import MIN_BOOTSTRAP_FOR_INTERVALS, n_distinct

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
HUBER_DELTA = 1e-3
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
# Internal vector order: (a, b, e, alpha, beta) in normalised units.
LOWER = np.array([-40.0, -40.0, -40.0, 1e-4, 1e-4])
UPPER = np.array([40.0, 40.0, 40.0, 5.0, 5.0])
# Start grid, relative to the smallest observed loss (a', b', e are logs of these times min L).
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "E_frac": (0.05, 0.3, 0.6, 0.9),
    "A_frac": (0.01, 0.05, 0.2, 0.5, 1.0),
    "B_frac": (0.01, 0.05, 0.2, 0.5, 1.0),
    "alpha": (0.1, 0.3, 0.6, 1.0, 1.5),
    "beta": (0.1, 0.3, 0.6, 1.0, 1.5),
}
DEFAULT_POLISH = 32  # L-BFGS runs from the best grid points
AGREE_RTOL = 1e-6
BOOTSTRAP_BATCH = 250  # refits per minimize_batch call: a progress step, and bounded memory


def objective(theta_KP: Array, lnn: Array, lnd: Array, logy: Array, w_Kn: Array, delta: float = HUBER_DELTA) -> tuple[Array, Array]:
    """Summed Huber loss of log residuals and its gradient for K parameter rows -> ([K], [K, 5])."""
    a, b, e = theta_KP[:, 0:1], theta_KP[:, 1:2], theta_KP[:, 2:3]
    alpha, beta = theta_KP[:, 3:4], theta_KP[:, 4:5]
    u1 = a - alpha * lnn
    u2 = b - beta * lnd
    m = np.maximum(np.maximum(u1, u2), e)
    e1, e2, e3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(e - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - logy
    ar = np.abs(r)
    huber = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
    f = np.sum(w_Kn * huber, axis=1)
    wpsi = w_Kn * np.clip(r, -delta, delta) / s
    g1, g2 = wpsi * e1, wpsi * e2
    grad = np.stack(
        [g1.sum(1), g2.sum(1), (wpsi * e3).sum(1), -(g1 * lnn).sum(1), -(g2 * lnd).sum(1)], axis=1
    )
    return f, grad


def to_raw(theta_KP: Array, n0: float, d0: float) -> Array:
    """Normalised (a', b', e, alpha, beta) rows -> raw (E, A, B, alpha, beta) rows."""
    alpha, beta = theta_KP[:, 3], theta_KP[:, 4]
    with np.errstate(over="ignore"):
        return np.stack(
            [np.exp(theta_KP[:, 2]), np.exp(theta_KP[:, 0] + alpha * math.log(n0)),
             np.exp(theta_KP[:, 1] + beta * math.log(d0)), alpha, beta], axis=1,
        )


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Chinchilla:
    """L(N, D) for normalised rows theta = (a', b', e, alpha, beta) [S, 5], as the metric (1 - L for a
    quality metric). Its curve in C is along the compute-optimal frontier, C = k N D."""

    name: ClassVar[str] = "chinchilla"
    label: ClassVar[str] = "L(N, D) = E + A/N^alpha + B/D^beta"
    n_params: ClassVar[int] = 5
    needs_nd: ClassVar[bool] = True
    noise_space: ClassVar[NoiseSpace] = "metric"
    n0: float
    d0: float
    higher_is_better: bool  # True: the law is fitted to 1 - metric
    metric_name: str
    flops_per_nd: float = DEFAULT_FLOPS_PER_ND  # k of the curve in C

    def at(self, rows_SP: Array, n: ArrayLike | float, d: ArrayLike | float) -> Array:
        """Metric for each row at the points (n, d) (broadcast, then flattened) -> [S, M]."""
        nn, dd = np.broadcast_arrays(np.asarray(n, np.float64), np.asarray(d, np.float64))
        if not (np.all(np.isfinite(nn)) and np.all(nn > 0) and np.all(np.isfinite(dd)) and np.all(dd > 0)):
            raise ValueError("N and D to predict at must be finite and positive")
        lnn, lnd, th = np.log(nn.ravel() / self.n0), np.log(dd.ravel() / self.d0), rows_SP
        loss = np.exp(th[:, 0:1] - th[:, 3:4] * lnn) + np.exp(th[:, 1:2] - th[:, 4:5] * lnd) + np.exp(th[:, 2:3])
        return 1.0 - loss if self.higher_is_better else loss

    def predict(self, rows_SP: Array, data: ScalingData) -> Array:
        return self.at(rows_SP, *data.require_nd("predict with the two-variable law"))

    def in_c(self, point_P: Array, draws_SP: Array) -> tuple[CurveInC, Array, Array]:
        return in_c(self, point_P, draws_SP)

    @classmethod
    def fit(cls, data: ScalingData, *, n_bootstrap: int, seed: int, level: float, flops_per_nd: float) -> FormFit:
        """Bootstrap refits as draws; new-run noise from the residuals (ddof 5; not checked by simulation)."""
        n, d = data.require_nd("fit the two-variable law")
        f = fit_chinchilla(n, d, data.y, higher_is_better=data.higher_is_better, n_bootstrap=n_bootstrap, seed=seed,
                           groups=data.groups, level=level, metric_name=data.metric)
        law = f.law(flops_per_nd)
        residuals = data.y - law.at(f.theta[None, :], n, d)[0]
        gidx = group_index(data.groups, data.y.size)
        noise = estimate_noise(residuals, cls.n_params, gidx) if data.y.size > cls.n_params else None
        sd = np.empty(0) if noise is None else noise.draw_sd(f.bootstrap_theta.shape[0], np.random.default_rng(seed))[1]
        return FormFit(form=law, fit=f, point=f.theta, draws=f.bootstrap_theta, residuals=residuals, noise=noise,
                       noise_sd=sd, bounds=metric_bounds(data.metric))


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ChinchillaFit:
    """A fitted L(N, D); params are raw (A, B in units of N and D, not normalised)."""

    formula: str
    metric_name: str
    higher_is_better: bool  # True: the law is fitted to 1 - metric
    params: dict[str, float]  # E, A, B, alpha, beta
    param_intervals: dict[str, tuple[float, float]]
    level: float
    n0: float
    d0: float
    n_points: int
    huber_loss: float
    huber_delta: float
    converged: bool
    message: str
    n_starts_agreeing: int
    n_starts: int
    params_at_bounds: tuple[str, ...]
    n_bootstrap: int
    n_bootstrap_used: int
    n_bootstrap_degenerate: int
    n_bootstrap_not_converged: int
    bootstrap_unit: str
    seed: int
    theta: Array = dataclasses.field(repr=False, compare=False)  # [5] normalised (a', b', e, alpha, beta)
    bootstrap_theta: Array = dataclasses.field(repr=False, compare=False)  # [B_used, 5] normalised
    not_identified: dict[str, str] = dataclasses.field(default_factory=dict)  # parameter -> why (no interval)

    def law(self, flops_per_nd: float = DEFAULT_FLOPS_PER_ND) -> Chinchilla:
        """The form's math with this fit's constants, its curve in C at C = k N D with k = `flops_per_nd`."""
        return Chinchilla(n0=self.n0, d0=self.d0, higher_is_better=self.higher_is_better, metric_name=self.metric_name,
                          flops_per_nd=flops_per_nd)

    def predict(self, n: ArrayLike | float, d: ArrayLike | float) -> Array:
        """Fitted metric at (N, D) (broadcast; same units as the fitted metric)."""
        return self.law().at(self.theta[None, :], n, d)[0].reshape(np.broadcast_shapes(np.shape(n), np.shape(d)))

    def band(self, n: ArrayLike, d: ArrayLike, level: float | None = None) -> tuple[Array, Array]:
        lvl = validate_level(self.level if level is None else level)
        if self.bootstrap_theta.shape[0] < MIN_BOOTSTRAP_FOR_INTERVALS:
            raise ValueError(f"{self.bootstrap_theta.shape[0]} usable bootstrap refits; a band needs >= {MIN_BOOTSTRAP_FOR_INTERVALS}")
        lo, hi = np.quantile(self.law().at(self.bootstrap_theta, n, d), [(1 - lvl) / 2, (1 + lvl) / 2], axis=0)
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN as None); a parameter that is not identified has interval None."""
        return {
            "formula": self.formula, "metric": self.metric_name, "higher_is_better": self.higher_is_better,
            "params": {k: float(v) for k, v in self.params.items()},
            "param_intervals": {k: None if k in self.not_identified else [float_or_none(lo), float_or_none(hi)]
                                for k, (lo, hi) in self.param_intervals.items()},
            "not_identified": dict(self.not_identified), "level": self.level, "n0": self.n0, "d0": self.d0,
            "n_points": self.n_points, "huber_loss": self.huber_loss, "huber_delta": self.huber_delta,
            "loss_reduction": "sum", "converged": self.converged, "message": self.message,
            "starts_agreeing": [self.n_starts_agreeing, self.n_starts], "params_at_bounds": list(self.params_at_bounds),
            "n_bootstrap": self.n_bootstrap, "n_bootstrap_used": self.n_bootstrap_used,
            "n_bootstrap_degenerate": self.n_bootstrap_degenerate,
            "n_bootstrap_not_converged": self.n_bootstrap_not_converged, "bootstrap_unit": self.bootstrap_unit,
            "seed": self.seed,
        }


def start_grid(logy: Array, grid: Mapping[str, Sequence[float]], jitter_seed: int | None) -> Array:
    """All combinations of the grid, as normalised parameter rows -> [S, 5].

    `jitter_seed` moves every start at random (a', b', e by up to +-0.5, the exponents by a factor
    up to e^+-0.35, about a third of a grid step) so different seeds give different start sets.
    """
    unknown = set(grid) - set(DEFAULT_GRID)
    if unknown:
        raise ValueError(f"start grid keys must be among {sorted(DEFAULT_GRID)}, got {sorted(grid)}")
    full = {**DEFAULT_GRID, **{k: tuple(v) for k, v in grid.items()}}
    for k, vals in full.items():
        if not vals or any(not (v > 0 and math.isfinite(v)) for v in vals):
            raise ValueError(f"start grid {k!r} needs positive finite values, got {vals}")
    ymin = float(np.min(logy))
    cols = np.meshgrid(
        ymin + np.log(full["A_frac"]), ymin + np.log(full["B_frac"]), ymin + np.log(full["E_frac"]),
        np.asarray(full["alpha"], np.float64), np.asarray(full["beta"], np.float64), indexing="ij",
    )
    starts = np.stack([c.ravel() for c in cols], axis=1)
    if jitter_seed is not None:
        rng = np.random.default_rng(jitter_seed)
        starts[:, :3] += rng.uniform(-0.5, 0.5, (starts.shape[0], 3))
        starts[:, 3:] *= np.exp(rng.uniform(-0.35, 0.35, (starts.shape[0], 2)))
    return np.clip(starts, LOWER, UPPER)


def _polish(starts: Array, lnn: Array, lnd: Array, logy: Array, delta: float) -> tuple[Array, float, bool, str, int]:
    """L-BFGS from every start (batched), then scipy's L-BFGS-B from the best to certify it.

    -> (theta, loss, converged, message, number of starts that reached the best loss).
    The batched pass is pure numpy; the final L-BFGS-B run starts at the optimum and stops in a
    few iterations (scipy's BLAS calls are slow when its threads compete for a loaded machine).
    """
    w = np.ones((1, lnn.size))
    batch = minimize_batch(
        lambda x, rows: objective(x, lnn, lnd, logy, np.broadcast_to(w, (rows.size, lnn.size)), delta),
        starts, LOWER, UPPER, max_iter=3000, gtol=1e-10, ftol=1e-14,
    )

    def fun(th: Array) -> tuple[float, Array]:
        f, g = objective(th[None, :], lnn, lnd, logy, w, delta)
        return float(f[0]), g[0]

    best = minimize(fun, batch.x[int(np.argmin(batch.f))], jac=True, method="L-BFGS-B", bounds=list(zip(LOWER, UPPER)),
                    options={"maxiter": 5000, "maxcor": 20, "ftol": 1e-15, "gtol": 1e-10})
    agree = int(np.sum(batch.f <= best.fun * (1 + AGREE_RTOL) + 1e-300))
    # Tight tolerances end a converged fit in "ABNORMAL" line searches at float precision; that is
    # convergence when the projected gradient is small against its largest possible size, about
    # n * delta (every residual in the linear Huber branch pulling the same way).
    pg = float(np.max(np.abs(np.clip(best.x - best.jac, LOWER, UPPER) - best.x)))
    converged = bool(best.success or pg <= 1e-6 * lnn.size * delta)
    message = f"L-BFGS-B: {best.message} ({best.nit} iterations from the best batched start), projected gradient {pg:.2g}"
    return best.x, float(best.fun), converged, message, agree


def fit_chinchilla(
    n_params: ArrayLike, tokens: ArrayLike, y: ArrayLike, *, higher_is_better: bool = False, n_bootstrap: int = 500,
    seed: int = 0, level: float = 0.95, metric_name: str = "L", groups: Sequence[Any] | None = None,
    grid: Mapping[str, Sequence[float]] | None = None, jitter_seed: int | None = None, n_polish: int = DEFAULT_POLISH,
    delta: float = HUBER_DELTA,
) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta (one point per run) with bootstrap intervals.

    `groups` (one key per run, e.g. the config without its seed) makes the bootstrap resample
    whole replicate groups, so seed replicates of one config are never split between resamples.
    """
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be a bool, got {higher_is_better!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative int (e.g. 500), got {n_bootstrap!r}")
    if not (isinstance(n_polish, int) and n_polish >= 1):
        raise ValueError(f"n_polish must be an int >= 1, got {n_polish!r}")
    level = validate_level(level)
    nn, dd, v = validate_nd_points(n_params, tokens, y, min_points=6, min_distinct=3, model="two-variable law L(N, D)")
    loss = 1.0 - v if higher_is_better else v
    if np.any(loss <= 0):
        what = "1 - metric (the miss rate)" if higher_is_better else "the metric"
        raise ValueError(
            f"{what} must be > 0 for the log-space fit, but {int(np.sum(loss <= 0))} run(s) have it <= 0"
            + ("; the complement form needs a metric in [0, 1)" if higher_is_better else "")
        )
    group_idx = group_index(groups, nn.size)
    n0, d0 = float(np.exp(np.mean(np.log(nn)))), float(np.exp(np.mean(np.log(dd))))
    lnn, lnd, logy = np.log(nn / n0), np.log(dd / d0), np.log(loss)

    starts = start_grid(logy, grid or {}, jitter_seed)
    f_grid, _ = objective(starts, lnn, lnd, logy, np.ones((1, nn.size)), delta)
    best_starts = starts[np.argsort(f_grid, kind="stable")[: min(n_polish, starts.shape[0])]]
    theta, huber, converged, message, agree = _polish(best_starts, lnn, lnd, logy, delta)
    message += f"; {agree} of {best_starts.shape[0]} L-BFGS starts (best of a {starts.shape[0]}-point grid) reached the best loss"
    if not converged:
        log.warning("two-variable fit of %s did not converge: %s", metric_name, message)

    boot, n_degenerate, n_failed = _bootstrap(theta, lnn, lnd, logy, nn, dd, group_idx, n_bootstrap, seed, delta)
    raw = to_raw(theta[None, :], n0, d0)[0]
    params = dict(zip(PARAM_NAMES, (float(p) for p in raw)))
    intervals = percentile_intervals(to_raw(boot, n0, d0), PARAM_NAMES, level)
    names = ("A", "B", "E", "alpha", "beta")  # internal order, for bound flags
    at_bounds = tuple(
        k for k, t, lo, hi in zip(names, theta, LOWER, UPPER) if t <= lo + 1e-6 * max(1.0, abs(lo)) or t >= hi * (1 - 1e-6)
    )
    unidentified = _not_identified(params, intervals, at_bounds)
    intervals = {k: (math.nan, math.nan) if k in unidentified else iv for k, iv in intervals.items()}
    lhs = f"1 - {metric_name}" if higher_is_better else metric_name
    return ChinchillaFit(
        formula=f"{lhs} = E + A / N^alpha + B / D^beta",
        metric_name=metric_name,
        higher_is_better=bool(higher_is_better),
        params=params,
        param_intervals=intervals,
        level=level,
        n0=n0,
        d0=d0,
        n_points=int(nn.size),
        huber_loss=huber,
        huber_delta=delta,
        converged=converged,
        message=message,
        n_starts_agreeing=agree,
        n_starts=int(best_starts.shape[0]),
        params_at_bounds=at_bounds,
        n_bootstrap=int(n_bootstrap),
        n_bootstrap_used=int(boot.shape[0]),
        n_bootstrap_degenerate=n_degenerate,
        n_bootstrap_not_converged=n_failed,
        bootstrap_unit="replicate group (config)" if group_idx is not None else "run",
        seed=int(seed),
        theta=theta,
        bootstrap_theta=boot,
        not_identified=unidentified,
    )


def _not_identified(
    params: dict[str, float], intervals: dict[str, tuple[float, float]], at_bounds: tuple[str, ...]
) -> dict[str, str]:
    """Parameters reported without an interval -> why: on an optimiser bound (an exponent takes its
    amplitude with it), or with a percentile interval that excludes the estimate itself."""
    out: dict[str, str] = {}
    for k in at_bounds:
        why = f"{k} is at its optimiser bound: the data do not determine it"
        out[k] = why
        if k in ("alpha", "beta"):
            out.setdefault("A" if k == "alpha" else "B", why)
    for k, (lo, hi) in intervals.items():
        if k not in out and math.isfinite(lo) and not lo <= params[k] <= hi:
            out[k] = f"the bootstrap interval [{lo:.4g}, {hi:.4g}] excludes the estimate {params[k]:.4g}"
    return out


def _bootstrap(
    theta: Array, lnn: Array, lnd: Array, logy: Array, nn: Array, dd: Array,
    group_idx: npt.NDArray[np.intp] | None, n_bootstrap: int, seed: int, delta: float,
) -> tuple[Array, int, int]:
    """Weighted refits of resamples, warm-started at theta -> (thetas [B_used, 5], skipped, not converged)."""
    if n_bootstrap == 0:
        return np.empty((0, 5)), 0, 0
    w = group_weights(nn.size, group_idx, n_bootstrap, np.random.default_rng(seed))
    ok = (n_distinct(w, nn) >= 3) & (n_distinct(w, dd) >= 3)
    n_degenerate = int((~ok).sum())
    w = w[ok]
    if w.shape[0] == 0:
        return np.empty((0, 5)), n_degenerate, 0

    # Batches only to show progress: the refits are independent rows of minimize_batch, so a row's
    # result does not depend on which batch it is in (each batch also stops at its own slowest row).
    thetas, converged = [], []
    for rows_sl in batches(w.shape[0], BOOTSTRAP_BATCH, desc="chinchilla bootstrap", unit="refit"):
        w_b = w[rows_sl]

        def fg(x: Array, rows: npt.NDArray[np.intp], w_b: Array = w_b) -> tuple[Array, Array]:
            return objective(x, lnn, lnd, logy, w_b[rows], delta)

        res = minimize_batch(fg, np.tile(theta, (w_b.shape[0], 1)), LOWER, UPPER, max_iter=2000, gtol=1e-9, ftol=1e-13)
        thetas.append(res.x)
        converged.append(res.converged)
    x_all, ok_all = np.concatenate(thetas), np.concatenate(converged)
    n_failed = int((~ok_all).sum())
    if n_failed:
        log.warning("bootstrap: %d of %d refits did not converge and are dropped", n_failed, w.shape[0])
    if n_degenerate:
        log.info("bootstrap: skipped %d of %d resamples with < 3 distinct N or D", n_degenerate, n_bootstrap)
    return x_all[ok_all], n_degenerate, n_failed
