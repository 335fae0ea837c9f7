"""Compute grids: model shapes and data volumes that land on a training-FLOPs budget (torch-free).

The FLOPs of a candidate are always `scaling.flops.run_flops(...).train` of its resolved config
(dense-jagged matmul convention), on the data set's real per-user lengths
(`gr_core.lengths.train_sequence_lengths`): nothing here has its own FLOPs formula.

Two questions:
- `data_for_budget`: given a model (a `RunConfig`), how many users (or epochs) reach the budget?
  Training FLOPs are a sum over users of a per-user cost, and the synthetic generator draws users'
  event counts as a prefix-stable stream (the first k users of a larger draw are the k users of a
  smaller one), so the user count is found exactly from one cumulative sum, then checked with
  `run_flops`. Epochs multiply the per-epoch FLOPs, so the nearest integer is taken.
- `configs_for_budget`: given a shape rule (a fixed depth with the width searched, or a fixed
  width / depth ratio with the depth searched), the HSTU configs whose training FLOPs land within
  `tolerance` (default +/-2%) of the budget, adjusting the data volume for each shape (or not:
  `adjust=None` keeps the data and only keeps shapes that land on the budget as they are).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Literal

import numpy as np

from gr_core.config import DataConfig, RunConfig
from gr_core.lengths import train_sequence_lengths
from scaling.flops import forward_flops, run_flops
from scaling.params import run_params

logger = logging.getLogger(__name__)

DataAxis = Literal["num_users", "epochs"]
DEFAULT_TOLERANCE = 0.02
MAX_USERS = 50_000_000  # beyond this a budget is out of reach of the synthetic generator's draw size


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FixedDepth:
    """Keep model.num_blocks = num_blocks; search embedding_dim over [min_width, max_width]."""

    num_blocks: int
    min_width: int = 16
    max_width: int = 1024

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ValueError(f"FixedDepth.num_blocks must be >= 1, got {self.num_blocks}")
        if not 1 <= self.min_width <= self.max_width:
            raise ValueError(
                f"FixedDepth needs 1 <= min_width <= max_width, got min_width={self.min_width}, "
                f"max_width={self.max_width}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FixedAspect:
    """Keep embedding_dim ~ width_per_block x num_blocks; search num_blocks over [min_blocks, max_blocks]."""

    width_per_block: float
    min_blocks: int = 1
    max_blocks: int = 32

    def __post_init__(self) -> None:
        if not self.width_per_block > 0:
            raise ValueError(f"FixedAspect.width_per_block must be > 0, got {self.width_per_block}")
        if not 1 <= self.min_blocks <= self.max_blocks:
            raise ValueError(
                f"FixedAspect needs 1 <= min_blocks <= max_blocks, got min_blocks={self.min_blocks}, "
                f"max_blocks={self.max_blocks}"
            )


ShapeRule = FixedDepth | FixedAspect


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class GridPoint:
    """One config of a compute grid and where its training FLOPs land against the budget."""

    config: RunConfig
    train_flops: float
    budget: float

    @property
    def rel_error(self) -> float:
        return self.train_flops / self.budget - 1.0

    @property
    def non_embedding_params(self) -> int:
        return run_params(self.config.data, self.config.model, self.config.train).non_embedding

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.config.run_id,
            "num_blocks": self.config.model.num_blocks,
            "embedding_dim": self.config.model.embedding_dim,
            "num_users": self.config.data.num_users,
            "epochs": self.config.train.epochs,
            "non_embedding_params": self.non_embedding_params,
            "train_flops": self.train_flops,
            "budget": self.budget,
            "rel_error": self.rel_error,
        }


def _check_budget(budget: float, tolerance: float | None) -> None:
    if not (budget > 0 and math.isfinite(budget)):
        raise ValueError(f"budget must be a positive number of FLOPs, got {budget}")
    if tolerance is not None and not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")


@functools.lru_cache(maxsize=16)
def _lengths_pool(data: DataConfig, max_seq_len: int) -> np.ndarray:
    # `data.num_users` is a power of two here, so grids over many shapes share a few draws.
    return train_sequence_lengths(data, max_seq_len)


def _per_user_train_flops(lengths: np.ndarray, config: RunConfig) -> np.ndarray:
    """Training FLOPs contributed by each user, from `forward_flops` (linear in n and n^2)."""
    # The task's heads as `run_flops` counts them: sampled softmax (retrieval) and/or ranking head.
    head = config.train.num_negatives + 1 if config.train.retrieval else 0
    ranking = config.train.ranking
    one = forward_flops(np.array([1]), config.model, head_candidates=head, ranking=ranking).total_dense
    two = forward_flops(np.array([2]), config.model, head_candidates=head, ranking=ranking).total_dense
    quadratic = (two - 2.0 * one) / 2.0  # f(n) = a n + b n^2: f(2) - 2 f(1) = 2 b
    linear = one - quadratic
    n = lengths.astype(np.float64)
    return 3.0 * config.train.epochs * (linear * n + quadratic * n * n)


def _users_for_budget(budget: float, config: RunConfig) -> int:
    users = 1 << 10
    while True:
        pool = _lengths_pool(dataclasses.replace(config.data, num_users=users), config.model.max_seq_len)
        cumulative = np.cumsum(_per_user_train_flops(pool, config))
        if cumulative[-1] >= budget:
            break
        if users >= MAX_USERS:
            raise ValueError(
                f"budget {budget:.3e} FLOPs needs more than {MAX_USERS:,} users for this model "
                f"({cumulative[-1]:.3e} FLOPs at {users:,}); raise train.epochs or the model size"
            )
        users = min(users * 2 ** max(1, math.ceil(math.log2(budget / cumulative[-1]))), MAX_USERS)
    above = int(np.searchsorted(cumulative, budget))  # cumulative[above] >= budget: above + 1 users
    if above > 0 and budget - cumulative[above - 1] < cumulative[above] - budget:
        return above
    return above + 1


def data_for_budget(
    budget: float,
    config: RunConfig,
    *,
    adjust: DataAxis = "num_users",
    tolerance: float | None = DEFAULT_TOLERANCE,
) -> GridPoint:
    """`config` with data.num_users (or train.epochs) set so its training FLOPs are nearest `budget`.

    Raises ValueError if the nearest lands outside +/-tolerance (tolerance=None: never).
    """
    _check_budget(budget, tolerance)
    if adjust == "num_users":
        users = _users_for_budget(budget, config)
        out = dataclasses.replace(config, data=dataclasses.replace(config.data, num_users=users))
    elif adjust == "epochs":
        one_epoch = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1))
        per_epoch = run_flops(one_epoch.data, one_epoch.model, one_epoch.train).train
        if per_epoch <= 0:
            raise ValueError("the data set has no training tokens (every user has < 4 events)")
        epochs = max(1, round(budget / per_epoch))
        out = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    else:
        raise ValueError(f"adjust must be 'num_users' or 'epochs', got {adjust!r}")
    point = GridPoint(config=out, train_flops=run_flops(out.data, out.model, out.train).train, budget=budget)
    if tolerance is not None and abs(point.rel_error) > tolerance:
        raise ValueError(
            f"no {adjust} reaches {budget:.3e} FLOPs within +/-{tolerance:.0%} for this model: the nearest, "
            f"{adjust}={getattr(out.data if adjust == 'num_users' else out.train, adjust)}, gives "
            f"{point.train_flops:.3e} ({point.rel_error:+.1%})"
        )
    return point


def _shapes(rule: ShapeRule, step: int) -> list[tuple[int, int]]:
    """(num_blocks, embedding_dim) candidates of a rule, widths multiples of `step`."""
    if isinstance(rule, FixedDepth):
        first = max(step, math.ceil(rule.min_width / step) * step)
        return [(rule.num_blocks, w) for w in range(first, rule.max_width + 1, step)]
    if isinstance(rule, FixedAspect):
        shapes = []
        for depth in range(rule.min_blocks, rule.max_blocks + 1):
            width = max(step, round(rule.width_per_block * depth / step) * step)
            if (depth, width) not in shapes:
                shapes.append((depth, width))
        return shapes
    raise TypeError(f"rule must be FixedDepth or FixedAspect, got {type(rule).__name__}")


def _candidates(
    budget: float, base: RunConfig, shapes: list[tuple[int, int]], adjust: DataAxis | None, tolerance: float
) -> tuple[list[GridPoint], GridPoint | None]:
    """Points within tolerance, and the nearest point overall (for the error message)."""
    hits: list[GridPoint] = []
    nearest: GridPoint | None = None
    for depth, width in shapes:
        model = dataclasses.replace(base.model, num_blocks=depth, embedding_dim=width)
        config = dataclasses.replace(base, model=model)
        try:
            if adjust is None:
                point = GridPoint(config=config, train_flops=run_flops(config.data, model, config.train).train,
                                  budget=budget)
            else:
                point = data_for_budget(budget, config, adjust=adjust, tolerance=None)
        except ValueError as exc:  # e.g. more users than the generator draws
            logger.debug("shape %d x %d skipped: %s", depth, width, exc)
            continue
        if nearest is None or abs(point.rel_error) < abs(nearest.rel_error):
            nearest = point
        if abs(point.rel_error) <= tolerance:
            hits.append(point)
    return hits, nearest


def configs_for_budget(
    budget: float,
    base: RunConfig,
    rule: ShapeRule,
    *,
    adjust: DataAxis | None = "num_users",
    tolerance: float = DEFAULT_TOLERANCE,
    width_multiple: int = 8,
) -> list[GridPoint]:
    """HSTU configs under `rule` whose training FLOPs are within +/-tolerance of `budget`.

    Widths are multiples of lcm(width_multiple, num_heads) (per-head widths stay integral and
    tensor-core friendly); if no such width lands on the budget, multiples of num_heads alone are
    tried (with a warning). Everything else (heads, max_seq_len, data, training) comes from `base`.
    Returned smallest model first. Raises ValueError when no config reaches the budget.
    """
    _check_budget(budget, tolerance)
    if width_multiple < 1:
        raise ValueError(f"width_multiple must be >= 1, got {width_multiple}")
    heads = base.model.num_heads
    steps = [math.lcm(width_multiple, heads)]
    if steps[0] != heads:
        steps.append(heads)
    nearest: GridPoint | None = None
    for step in steps:
        hits, near = _candidates(budget, base, _shapes(rule, step), adjust, tolerance)
        if hits:
            if step != steps[0]:
                logger.warning(
                    "no width that is a multiple of %d reaches %.3e FLOPs within +/-%.0f%%; "
                    "using multiples of num_heads=%d", steps[0], budget, 100 * tolerance, heads,
                )
            return sorted(hits, key=lambda p: (p.non_embedding_params, p.config.model.num_blocks))
        if near is not None and (nearest is None or abs(near.rel_error) < abs(nearest.rel_error)):
            nearest = near
    closest = (
        f"the nearest is {nearest.config.model.num_blocks} blocks x D {nearest.config.model.embedding_dim} "
        f"with {nearest.train_flops:.3e} FLOPs ({nearest.rel_error:+.1%})"
        if nearest is not None else "no shape could be evaluated"
    )
    how = f"adjusting data.{adjust}" if adjust == "num_users" else (
        f"adjusting train.{adjust}" if adjust else "with the data fixed")
    raise ValueError(
        f"no HSTU config under {rule} reaches {budget:.3e} training FLOPs within +/-{tolerance:.0%} "
        f"{how}; {closest}"
    )
