"""Sweep designs: turn the axes' product into runs (grid, isoFLOP, ladder).

The isoFLOP and ladder designs solve each run's data volume from the real per-user lengths of
the synthetic data (`scaling.grid.data_for_budget` for FLOPs budgets, a cumulative token count
for the ladder), so the planned FLOPs stay exact. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from gr_core.config import RunConfig
from gr_core.lengths import train_sequence_lengths
from scaling.grid import data_for_budget
from scaling.params import run_params
from sweeps.spec import DesignConfig, SweepSpec

MAX_LADDER_USERS = 50_000_000


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SkippedRun:
    """A point the design could not place (e.g. a budget no data volume reaches for that shape)."""

    axis_values: dict[str, Any]
    reason: str


def iter_expand(spec: SweepSpec) -> Iterator[tuple[dict[str, Any], RunConfig] | SkippedRun]:
    """The spec's runs as (axis values, resolved config), or a `SkippedRun` for a point the design
    could not place, one at a time (so a large grid is never held whole), in `expand`'s order."""
    design = spec.design
    if design.kind == "grid":
        yield from spec.iter_run_configs()
        return
    if design.kind == "isoflop":
        for budget in design.budgets:
            for axis_values, config in spec.iter_run_configs():  # re-expanded per budget: nothing held
                point = {**axis_values, "budget": budget}
                try:
                    grid_point = data_for_budget(budget, config, adjust=design.adjust, tolerance=design.tolerance)
                except ValueError as exc:
                    yield SkippedRun(axis_values=point, reason=str(exc))
                    continue
                yield point, grid_point.config
        return
    for multiplier in design.multipliers:
        for axis_values, config in spec.iter_run_configs():
            point = {**axis_values, "multiplier": multiplier}
            try:
                rung = _ladder_rung(config, multiplier, design)
            except ValueError as exc:
                yield SkippedRun(axis_values=point, reason=str(exc))
                continue
            yield point, rung


def expand(spec: SweepSpec) -> tuple[list[tuple[dict[str, Any], RunConfig]], list[SkippedRun]]:
    """The spec's runs as (axis values, resolved config), and the points it had to skip."""
    runs: list[tuple[dict[str, Any], RunConfig]] = []
    skipped: list[SkippedRun] = []
    for item in iter_expand(spec):
        if isinstance(item, SkippedRun):
            skipped.append(item)
        else:
            runs.append(item)
    return runs, skipped


def _ladder_rung(config: RunConfig, multiplier: float, design: DesignConfig) -> RunConfig:
    """`config` with enough data for multiplier x tokens_per_param x non-embedding params tokens."""
    params = run_params(config.data, config.model, config.train).non_embedding
    target = multiplier * design.tokens_per_param * params  # supervised tokens over the whole run
    if design.adjust == "epochs":
        per_epoch = int(train_sequence_lengths(config.data, config.model.max_seq_len).sum())
        if per_epoch == 0:
            raise ValueError("the data set has no training tokens; raise data.min_events above 3")
        epochs = max(1, math.ceil(target / per_epoch))
        return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    per_user_target = target / config.train.epochs
    users = 1024
    while True:
        # Event counts are a prefix-stable draw: the first k users of a larger set are the k users.
        lengths = train_sequence_lengths(dataclasses.replace(config.data, num_users=users), config.model.max_seq_len)
        cumulative = np.cumsum(lengths)
        if cumulative[-1] >= per_user_target:
            break
        if users >= MAX_LADDER_USERS:
            raise ValueError(
                f"{multiplier}x needs more than {MAX_LADDER_USERS:,} users at {config.train.epochs} epochs; "
                "set design.adjust = 'epochs' or raise train.epochs"
            )
        users = min(users * 4, MAX_LADDER_USERS)
    num_users = int(np.searchsorted(cumulative, per_user_target)) + 1
    return dataclasses.replace(config, data=dataclasses.replace(config.data, num_users=num_users))
