"""Bootstrap resamples as point weights, over runs or over replicate groups.

A resample drawn with replacement is represented by each point's multiplicity (a multinomial
count), so a weighted refit needs no copying or re-indexing of the data. With `group_idx`, whole
groups (seed replicates of one config) are drawn: every run of a drawn group gets the group's
count, so replicates are never split and the bootstrap's unit is the config, not the run. That is
the honest unit when seeds share everything but the initialisation: resampling runs would treat
two seeds of one config as independent evidence about the curve.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt


def group_index(groups: Sequence[Hashable] | None, n: int) -> npt.NDArray[np.intp] | None:
    """Integer group ids [n] from one hashable key per run (None -> None: every run its own group)."""
    if groups is None:
        return None
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} runs: give one replicate-group key per run")
    ids: dict[Hashable, int] = {}
    return np.array([ids.setdefault(g, len(ids)) for g in groups], dtype=np.intp)


def group_weights(
    n: int, group_idx: npt.NDArray[np.intp] | None, n_resamples: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Multiplicities [n_resamples, n] of the points in bootstrap resamples (runs or groups)."""
    if group_idx is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    n_groups = int(group_idx.max()) + 1
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)
    return counts[:, group_idx].astype(np.float64)
