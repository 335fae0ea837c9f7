"""Planning: expand a sweep spec into runs with exact parameter counts and training FLOPs."""

from __future__ import annotations

import functools

import numpy as np

from gr_core.config import DataConfig, RunConfig
from gr_core.lengths import train_sequence_lengths
from scaling import FLOPS_CONVENTION, count_params, run_flops
from sweeps.ledger import PlannedRun
from sweeps.spec import SweepSpec


@functools.lru_cache(maxsize=256)
def _lengths(data: DataConfig, max_seq_len: int) -> np.ndarray:
    # Many grid points share a data set; its length draw is the only non-trivial planning cost.
    return train_sequence_lengths(data, max_seq_len)


def plan_run(config: RunConfig, axis_values: dict) -> PlannedRun:
    lengths = _lengths(config.data, config.model.max_seq_len)
    flops = run_flops(config.data, config.model, config.train, lengths=lengths)
    return PlannedRun(
        run_id=config.run_id,
        axis_values=axis_values,
        config=config.to_dict(),
        flops=flops.to_dict(),
        params=count_params(config.model, config.data.num_items).to_dict(),
    )


def plan_sweep(spec: SweepSpec) -> list[PlannedRun]:
    """All runs of the spec, smallest training FLOPs first (early results come from cheap runs)."""
    runs = [plan_run(config, axis_values) for axis_values, config in spec.run_configs()]
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):  # can only happen if two axes resolve to identical configs
        raise ValueError(f"{spec.source}: the grid contains identical runs; check the axes for duplicates")
    return sorted(runs, key=lambda run: run.flops["train"])


def format_plan(runs: list[PlannedRun]) -> str:
    """A table of the planned runs, for `gr-scaling sweep plan`."""
    if not runs:
        return "no runs"
    axis_names = list(runs[0].axis_values)
    header = ["run_id", *axis_names, "params(non-emb)", "params(emb)", "train FLOPs"]
    rows = [
        [
            run.run_id,
            *(str(run.axis_values[a]) for a in axis_names),
            f"{run.params['non_embedding']:,}",
            f"{run.params['embedding']:,}",
            f"{run.flops['train']:.3e}",
        ]
        for run in runs
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    total = sum(run.flops["train"] for run in runs)
    span = max(r.flops["train"] for r in runs) / min(r.flops["train"] for r in runs)
    lines.append(
        f"{len(runs)} runs, total {total:.3e} training FLOPs, span {np.log10(span):.2f} orders of magnitude"
    )
    lines.append(f"convention: {FLOPS_CONVENTION}")
    return "\n".join(lines)
