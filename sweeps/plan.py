"""Planning: expand a sweep spec into runs with exact parameter counts and training FLOPs.

`plan_sweep` holds every planned run (what launching registers); `summarize_plan` streams them
into what `sweep plan` prints (count, FLOPs, budget, the cheapest and the dearest rows), so planning
a million-run grid needs about 40 bytes per run instead of kilobytes. Both refuse a spec above
`max_runs` (`sweeps.spec.MAX_RUNS` unless --allow-large) before expanding anything.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import logging
from array import array

import numpy as np

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.lengths import train_sequence_lengths
from scaling import FLOPS_CONVENTION, run_flops, run_params
from sweeps.ledger import PlannedRun
from sweeps.designs import SkippedRun, expand, iter_expand
from scaling.cost import CostEstimate, CostInputs
from scaling.cost import cost as estimate_cost
from sweeps.spec import MAX_RUNS, BudgetConfig, SweepSpec, check_run_count

log = logging.getLogger(__name__)

MAX_TABLE_ROWS = 60
MAX_SKIPPED_SHOWN = 20  # skipped design points listed by `sweep plan`; the rest are counted
_PROGRESS_EVERY = 100_000


@functools.lru_cache(maxsize=256)
def _lengths(data: DataConfig, max_seq_len: int) -> np.ndarray:
    # Many grid points share a data set; its length draw is the only non-trivial planning cost.
    return train_sequence_lengths(data, max_seq_len)


@functools.lru_cache(maxsize=4096)
def _flops(data: DataConfig, model: ModelConfig, train: TrainConfig) -> dict:
    return run_flops(data, model, train, lengths=_lengths(data, model.max_seq_len)).to_dict()


def plan_run(config: RunConfig, axis_values: dict) -> PlannedRun:
    # The training seed and optimiser settings do not change FLOPs: grids over seeds or learning
    # rates share one count per shape.
    flops_key = dataclasses.replace(config.train, seed=0, lr=1e-3, beta1=0.9, beta2=0.98, weight_decay=0.0)
    return PlannedRun(
        run_id=config.run_id,
        axis_values=axis_values,
        config=config.to_dict(),
        flops=dict(_flops(config.data, config.model, flops_key)),
        params=run_params(config.data, config.model, config.train).to_dict(),
    )


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    runs: list[PlannedRun]  # smallest training FLOPs first
    skipped: list[SkippedRun]  # points the design could not place, with the reason
    budget: BudgetConfig
    cost_inputs: CostInputs  # what the estimated device-hours and money assume

    @property
    def max_flops(self) -> float | None:
        return self.budget.max_flops

    @property
    def total_flops(self) -> float:
        return sum(run.flops["train"] for run in self.runs)

    def estimate(self, flops: float) -> CostEstimate:
        return estimate_cost(flops, self.cost_inputs)

    def within_budget(self) -> list[PlannedRun]:
        """The runs that launching would start, in order, before the next would exceed a cap."""
        chosen, flops = [], 0.0
        for run in self.runs:
            flops += run.flops["train"]
            if self.budget.max_flops is not None and flops > self.budget.max_flops:
                break
            if (
                self.budget.max_device_hours is not None
                and self.estimate(flops).device_hours > self.budget.max_device_hours
            ):
                break
            chosen.append(run)
        return chosen


def _check_size(spec: SweepSpec, max_runs: int | None) -> None:
    counts = [(axis.name, len(axis.values)) for axis in spec.axes]
    check_run_count(counts, spec.design, source=spec.source, max_runs=max_runs)


def _duplicates_error(spec: SweepSpec, duplicated: int) -> ValueError:
    # e.g. two ladder rungs that round to the same data volume
    return ValueError(
        f"{spec.source}: the design produces identical runs ({duplicated} duplicated configs); "
        "check the axes, budgets or multipliers for values that resolve to the same run"
    )


def plan_sweep(spec: SweepSpec, *, max_runs: int | None = MAX_RUNS) -> Plan:
    """All runs of the spec, smallest training FLOPs first (early results come from cheap runs).

    Refuses a spec of more than `max_runs` runs before expanding it (None: no limit).
    """
    _check_size(spec, max_runs)
    configs, skipped = expand(spec)
    runs = [plan_run(config, axis_values) for axis_values, config in configs]
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        seen, dupes = set(), set()
        for rid in ids:
            (dupes if rid in seen else seen).add(rid)
        raise _duplicates_error(spec, len(dupes))
    runs.sort(key=lambda run: run.flops["train"])
    return Plan(runs=runs, skipped=skipped, budget=spec.budget, cost_inputs=spec.cost)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PlanSummary:
    """What `sweep plan` prints: totals over every run, but only the rows the table shows.

    head: the cheapest runs in FLOPs order (every run when there are at most `MAX_TABLE_ROWS`);
    tail: the dearest `MAX_TABLE_ROWS // 2` when there are more (else empty). fits: how many runs
    launching starts before a [budget] cap stops it (None without a cap), fits_flops their FLOPs.
    """

    num_runs: int
    total_flops: float
    min_flops: float
    max_flops: float
    head: list[PlannedRun]
    tail: list[PlannedRun]
    fits: int | None
    fits_flops: float
    skipped: list[SkippedRun]  # the first MAX_SKIPPED_SHOWN
    num_skipped: int
    budget: BudgetConfig
    cost_inputs: CostInputs

    def estimate(self, flops: float) -> CostEstimate:
        return estimate_cost(flops, self.cost_inputs)


def _within_budget(cumulative: np.ndarray, budget: BudgetConfig, inputs: CostInputs) -> tuple[int | None, float]:
    """(runs, FLOPs) of the longest prefix of the FLOPs-sorted runs within the caps (`Plan.within_budget`).

    cumulative: running FLOPs total of the sorted runs; non-decreasing, so a bisection finds the end.
    """
    if budget.max_flops is None and budget.max_device_hours is None:
        return None, 0.0

    def fits(i: int) -> bool:
        flops = float(cumulative[i])
        if budget.max_flops is not None and flops > budget.max_flops:
            return False
        return budget.max_device_hours is None or estimate_cost(flops, inputs).device_hours <= budget.max_device_hours

    lo, hi = 0, len(cumulative)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if fits(mid) else (lo, mid)
    return lo, float(cumulative[lo - 1]) if lo else 0.0


def _summary(flops: np.ndarray, head: list[PlannedRun], tail: list[PlannedRun], skipped: list[SkippedRun],
             num_skipped: int, budget: BudgetConfig, inputs: CostInputs) -> PlanSummary:
    flops = np.sort(flops)
    cumulative = np.cumsum(flops)  # sequential, so the total equals Plan.total_flops bit for bit
    fits, fits_flops = _within_budget(cumulative, budget, inputs)
    if flops.size > MAX_TABLE_ROWS:
        head, tail = head[: MAX_TABLE_ROWS // 2], tail[-(MAX_TABLE_ROWS // 2):]
    else:
        tail = []
    return PlanSummary(
        num_runs=int(flops.size), total_flops=float(cumulative[-1]) if flops.size else 0.0,
        min_flops=float(flops[0]) if flops.size else 0.0, max_flops=float(flops[-1]) if flops.size else 0.0,
        head=head, tail=tail, fits=fits, fits_flops=fits_flops, skipped=skipped[:MAX_SKIPPED_SHOWN],
        num_skipped=num_skipped, budget=budget, cost_inputs=inputs,
    )


def summary_of(plan: Plan) -> PlanSummary:
    """The summary of a plan already held in memory (the same numbers `summarize_plan` streams)."""
    flops = np.array([run.flops["train"] for run in plan.runs], dtype=np.float64)
    return _summary(flops, plan.runs[:MAX_TABLE_ROWS], plan.runs[-(MAX_TABLE_ROWS // 2):], plan.skipped,
                    len(plan.skipped), plan.budget, plan.cost_inputs)


def summarize_plan(spec: SweepSpec, *, max_runs: int | None = MAX_RUNS) -> PlanSummary:
    """`plan_sweep`'s numbers in one streaming pass: about 40 bytes per run (its FLOPs and id, for the
    totals, the budget and the duplicate check) plus the rows shown, however large the grid."""
    _check_size(spec, max_runs)
    flops, ids = array("d"), array("Q")
    # Max-heap (negated keys) of the cheapest MAX_TABLE_ROWS and min-heap of the dearest half, keyed
    # (FLOPs, expansion index): the order of plan_sweep's stable sort.
    cheapest: list[tuple[float, int, PlannedRun]] = []
    dearest: list[tuple[float, int, PlannedRun]] = []
    skipped: list[SkippedRun] = []
    num_skipped, total = 0, spec.num_runs
    for item in iter_expand(spec):
        if isinstance(item, SkippedRun):
            num_skipped += 1
            if len(skipped) < MAX_SKIPPED_SHOWN:
                skipped.append(item)
            continue
        run = plan_run(item[1], item[0])
        index, train = len(flops), run.flops["train"]
        flops.append(train)
        ids.append(int(run.run_id, 16))
        heapq.heappush(cheapest, (-train, -index, run))
        if len(cheapest) > MAX_TABLE_ROWS:
            heapq.heappop(cheapest)
        heapq.heappush(dearest, (train, index, run))
        if len(dearest) > MAX_TABLE_ROWS // 2:
            heapq.heappop(dearest)
        if (index + 1) % _PROGRESS_EVERY == 0:
            log.info("planned %s of %s runs", f"{index + 1:,}", f"{total:,}")
    id_array = np.sort(np.frombuffer(ids, dtype=np.uint64))
    repeated = id_array[1:][id_array[1:] == id_array[:-1]]
    if repeated.size:
        raise _duplicates_error(spec, int(np.unique(repeated).size))
    del id_array, repeated
    head = [run for _, _, run in sorted(cheapest, key=lambda item: (-item[0], -item[1]))]
    tail = [run for _, _, run in sorted(dearest, key=lambda item: (item[0], item[1]))]
    return _summary(np.frombuffer(flops, dtype=np.float64), head, tail, skipped, num_skipped, spec.budget, spec.cost)


def format_plan(plan: Plan | PlanSummary) -> str:
    """A table of the planned runs (the cheapest and the dearest of a large plan), for `sweep plan`."""
    summary = summary_of(plan) if isinstance(plan, Plan) else plan
    more = summary.num_skipped - len(summary.skipped)
    skipped_lines = [f"skipped {s.axis_values}: {s.reason}" for s in summary.skipped]
    skipped_lines += [f"... and {more:,} more skipped points"] if more else []
    if not summary.num_runs:
        return "\n".join(["no runs", *skipped_lines])
    runs = [*summary.head, *summary.tail]
    axis_names = list(runs[0].axis_values)
    header = ["run_id", *axis_names, "params(non-emb)", "params(emb)", "train FLOPs", "device-h", "cost"]
    rows = [
        [
            run.run_id,
            *(str(run.axis_values[a]) for a in axis_names),
            f"{run.params['non_embedding']:,}",
            f"{run.params['embedding']:,}",
            f"{run.flops['train']:.3e}",
            f"{summary.estimate(run.flops['train']).device_hours:.3g}",
            f"{summary.estimate(run.flops['train']).cost:.3g}",
        ]
        for run in runs
    ]
    if summary.tail:  # a 10,000-run grid: the head and the tail say enough
        rows.insert(len(summary.head), ["..."] * len(header))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    total = summary.total_flops
    span = summary.max_flops / summary.min_flops
    lines.append(
        f"{summary.num_runs} runs, total {total:.3e} training FLOPs, span {np.log10(span):.2f} orders of magnitude"
    )
    total_cost = summary.estimate(total)
    c = summary.cost_inputs
    lines.append(
        f"estimated {total_cost.device_hours:.3g} device-hours on {c.num_devices} x {c.device} at MFU {c.mfu:g} "
        f"({total_cost.wall_clock_hours:.3g} h wall clock), cost {total_cost.cost:.3g} at {c.price_per_device_hour:g} "
        "per device-hour (training only; set [cost] in the spec)"
    )
    if summary.fits is not None:
        caps = [f"{summary.budget.max_flops:.3e} FLOPs"] if summary.budget.max_flops is not None else []
        if summary.budget.max_device_hours is not None:
            caps.append(f"{summary.budget.max_device_hours:g} device-hours")
        lines.append(
            f"budget {' and '.join(caps)}: {summary.fits} of {summary.num_runs} runs fit "
            f"({summary.fits_flops:.3e} FLOPs); launching stops there"
        )
    lines += skipped_lines
    lines.append(f"convention: {FLOPS_CONVENTION}")
    return "\n".join(lines)
