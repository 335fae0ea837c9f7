"""The sweep spec: one TOML file describing a compute grid, validated before any run starts.

```toml
[sweep]
name = "width-depth"
metric = "ndcg@10"          # what the fit and the ledger's trial value use
max_attempts = 2            # a failed run is retried until it has failed this many times

[axes]                      # the grid is the product of these lists
depth = [1, 2, 4]           # short names, or dotted config paths such as "model.dropout"
width = [16, 32, 64]
users = [1000, 4000]
seed = [0]

[axis_settings.width.64.train]   # fields set along with one value of an axis
lr = 3e-4

[base.model]                # fixed settings for every run (gr_core.config sections)
max_seq_len = 50

[dispatch]                  # slurm.DispatchConfig
executor = "local"
max_parallel = 2

[tracking]                  # W&B
mode = "offline"
```

This module is torch-free, so `gr-scaling sweep plan` validates a spec in milliseconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from gr_core.config import METRIC_TASKS, METRICS, RunConfig, config_from_dict, read_toml, table_keys
from scaling.cost import CostInputs
from slurm.config import DispatchConfig

# Short axis names for the grid dimensions researchers sweep most; any dotted config path works too.
AXIS_ALIASES: dict[str, str] = {
    "depth": "model.num_blocks",
    "width": "model.embedding_dim",
    "heads": "model.num_heads",
    "seq_len": "model.max_seq_len",
    "family": "model.family",
    "users": "data.num_users",
    "user_fraction": "data.user_fraction",  # a real source's data volume (nested subsamples)
    "items": "data.num_items",
    "epochs": "train.epochs",
    "lr": "train.lr",
    "seed": "train.seed",
}

# Runs a spec may describe before `sweep plan` / `sweep launch` refuse it without --allow-large.
# Planning costs about 0.1 ms and launching (ledger registration) about 5 ms per run on 2 cores, so
# 100,000 runs is minutes of planning and hours of registration: beyond that a typo in an axis
# (range(1000) for range(10)) is likelier than intent. `--allow-large` lifts it; `sweep plan`
# then streams the runs in bounded memory (`sweeps.plan.summarize_plan`).
MAX_RUNS = 100_000


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SweepSettings:
    name: str = "sweep"
    metric: str = "ndcg@10"
    max_attempts: int = 2

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(
                f"sweep.name must be non-empty and use letters, digits, '-', '_' or '.', got {self.name!r}"
            )
        if self.metric not in METRICS:
            raise ValueError(f"sweep.metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if self.max_attempts < 1:
            raise ValueError(f"sweep.max_attempts must be >= 1, got {self.max_attempts}")

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TrackingConfig:
    """Weights & Biases: offline by default, files inside the sweep directory."""

    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "gr-scaling"
    entity: str | None = None
    # Seconds a run waits for the W&B server before logging offline instead (W&B's own default
    # is 90 s, paid by every run while the host is unreachable).
    init_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.init_timeout_s > 0:
            raise ValueError(f"tracking.init_timeout_s must be > 0 seconds, got {self.init_timeout_s}")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class DesignConfig:
    """How the axes become runs.

    grid:    the product of the axes, as written.
    isoflop: for every budget in `budgets` and every model shape of the axes, the data volume
             (`adjust`: data.num_users or train.epochs) is solved so the run's training FLOPs land
             within `tolerance` of the budget (approach 2 of Chinchilla needs such curves).
    ladder:  for every model shape and every multiplier m, the data volume is solved so the run
             trains on m x tokens_per_param x (non-embedding params) supervised tokens (OLMo's
             ladder of 1x/2x/5x/10x "Chinchilla" data).
    """

    kind: Literal["grid", "isoflop", "ladder"] = "grid"
    budgets: tuple[float, ...] = ()
    tolerance: float = 0.02
    adjust: Literal["num_users", "epochs"] = "num_users"
    tokens_per_param: float = 20.0
    multipliers: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)

    def __post_init__(self) -> None:
        if self.kind == "isoflop" and not self.budgets:
            raise ValueError("design.budgets must list at least one FLOPs budget for kind = 'isoflop'")
        for i, budget in enumerate(self.budgets):
            if not budget > 0:
                raise ValueError(f"design.budgets[{i}] must be > 0, got {budget}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"design.tolerance must be in (0, 1), got {self.tolerance}")
        if self.tokens_per_param <= 0:
            raise ValueError(f"design.tokens_per_param must be > 0, got {self.tokens_per_param}")
        if self.kind == "ladder" and not self.multipliers:
            raise ValueError("design.multipliers must list at least one multiplier for kind = 'ladder'")
        for i, m in enumerate(self.multipliers):
            if not m > 0:
                raise ValueError(f"design.multipliers[{i}] must be > 0, got {m}")

    @property
    def adjusted_path(self) -> str:
        return "data.num_users" if self.adjust == "num_users" else "train.epochs"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class BudgetConfig:
    """Caps on the sweep's total training compute: launching stops before a run would exceed one.

    Device-hours are training FLOPs costed with the spec's [cost] table (device, MFU).
    """

    max_flops: float | None = None
    max_device_hours: float | None = None

    def __post_init__(self) -> None:
        if self.max_flops is not None and not self.max_flops > 0:
            raise ValueError(f"budget.max_flops must be > 0, got {self.max_flops}")
        if self.max_device_hours is not None and not self.max_device_hours > 0:
            raise ValueError(f"budget.max_device_hours must be > 0, got {self.max_device_hours}")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class LedgerConfig:
    """Where the ledger lives. Default: an SQLite file in the sweep directory.

    url: any SQLAlchemy URL Optuna accepts (e.g. postgresql://user@host/db for many nodes), or
    "journal:PATH" for Optuna's JournalFileBackend on a shared filesystem (NFS, where SQLite's
    locking is broken). A relative journal path is relative to the sweep directory.
    """

    url: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TuneConfig:
    """[tune]: trials = 0 (the default) turns tuning off."""

    param: str = "train.lr"
    low: float = 1e-4
    high: float = 1e-2
    log: bool = True
    trials: int = 0  # per shape
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "asha", "none"] = "median"
    startup_trials: int = 2  # trials per shape before the sampler and the pruner act
    seed: int = 0

    def __post_init__(self) -> None:
        section, _, key = self.param.partition(".")
        if section not in ("data", "model", "train") or not key:
            raise ValueError(f"tune.param must be a dotted config path such as 'train.lr', got {self.param!r}")
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(
                f"tune.low must be below tune.high (and > 0 when tune.log = true); got {self.low}, {self.high}"
            )
        if self.trials < 0:
            raise ValueError(f"tune.trials must be >= 0, got {self.trials}")
        if self.startup_trials < 0:
            raise ValueError(f"tune.startup_trials must be >= 0, got {self.startup_trials}")

    @property
    def enabled(self) -> bool:
        return self.trials > 0


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Axis:
    name: str  # as written in the spec ("width" or "model.dropout")
    path: str  # dotted config path ("model.embedding_dim")
    values: tuple[Any, ...]
    # [axis_settings.<name>.<value>]: other fields set with one of its values, {str(value): {dotted path: v}}
    # (e.g. each model family with its own learning rate); empty for most axes.
    settings: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def settings_for(self, value: Any) -> dict[str, Any]:
        return self.settings.get(str(value), {})


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SweepSpec:
    sweep: SweepSettings
    axes: tuple[Axis, ...]  # in spec order
    base: RunConfig
    dispatch: DispatchConfig
    tracking: TrackingConfig
    design: DesignConfig = dataclasses.field(default_factory=DesignConfig)
    budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)
    ledger: LedgerConfig = dataclasses.field(default_factory=LedgerConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)
    cost: CostInputs = dataclasses.field(default_factory=CostInputs)
    source: str = "<spec>"

    @property
    def num_grid_points(self) -> int:
        return math.prod(len(axis.values) for axis in self.axes)

    @property
    def num_runs(self) -> int:
        """Runs the design makes of the grid (isoFLOP and ladder points it cannot place included)."""
        return self.num_grid_points * _design_factor(self.design)

    def iter_run_configs(self) -> Iterator[tuple[dict[str, Any], RunConfig]]:
        """Expand the axes' product lazily: one (axis values, resolved RunConfig) per point, in spec order.

        This is the grid design's run list, and the model shapes of the other designs
        (`sweeps.designs.iter_expand` turns those into runs). Every run selects its reported epoch
        on the sweep's metric (train.selection_metric = sweep.metric).
        """
        base = self.base.to_dict()
        base["train"]["selection_metric"] = self.sweep.metric
        for point in itertools.product(*(axis.values for axis in self.axes)):
            raw = {section: dict(fields) for section, fields in base.items()}
            for axis, value in zip(self.axes, point):
                for path, setting in {axis.path: value, **axis.settings_for(value)}.items():
                    section, _, key = path.partition(".")
                    raw[section][key] = setting
            axis_values = {axis.name: value for axis, value in zip(self.axes, point)}
            described = ", ".join(f"{k}={v}" for k, v in axis_values.items())
            yield axis_values, RunConfig.from_dict(raw, where=f"{self.source} (grid point {described})")

    def run_configs(self) -> list[tuple[dict[str, Any], RunConfig]]:
        """`iter_run_configs` as a list (every point held at once: fine below `MAX_RUNS`)."""
        return list(self.iter_run_configs())


def _design_factor(design: DesignConfig) -> int:
    if design.kind == "isoflop":
        return len(design.budgets)
    if design.kind == "ladder":
        return len(design.multipliers)
    return 1


def check_run_count(
    counts: list[tuple[str, int]], design: DesignConfig, *, source: str, max_runs: int | None
) -> None:
    """Refuse a spec of more than `max_runs` runs (None: no limit), before anything is expanded.

    counts: (axis name, number of values) in spec order; the error shows the product, so a
    mistyped axis stands out.
    """
    total = math.prod(n for _, n in counts) * _design_factor(design)
    if max_runs is None or total <= max_runs:
        return
    factors = [f"{name} {n:,}" for name, n in counts]
    if design.kind != "grid":
        factors.append(f"{_design_factor(design)} design.{'budgets' if design.kind == 'isoflop' else 'multipliers'}")
    raise ValueError(
        f"{source}: the spec describes {total:,} runs (axes {' x '.join(factors) or '(none)'}), more than the "
        f"{max_runs:,} that `sweep plan` and `sweep launch` take without --allow-large; shrink the axes, or "
        "pass --allow-large if the grid is meant (`sweep plan` then streams it; `sweep launch` registers every run)"
    )


_TOP_LEVEL = ("sweep", "axes", "axis_settings", "base", "dispatch", "tracking", "design", "budget", "ledger", "tune",
              "cost")


def _resolve_axis(name: str, values: Any, base: RunConfig, source: str) -> Axis:
    dotted = AXIS_ALIASES.get(name, name)
    section, _, key = dotted.partition(".")
    valid_sections = ("data", "model", "train")
    if section not in valid_sections or not key:
        raise ValueError(
            f"{source}: axes.{name} is not a known axis; use one of {sorted(AXIS_ALIASES)} "
            "or a dotted config path such as 'model.dropout'"
        )
    valid_keys = table_keys(section)  # [model]: the shared keys and every family's options
    if key not in valid_keys:
        raise ValueError(f"{source}: axes.{name}: '{key}' is not a field of [{section}]; valid: {sorted(valid_keys)}")
    if not isinstance(values, list):
        raise ValueError(f"{source}: axes.{name} must be a list of values, got {values!r}")
    if not values:
        raise ValueError(f"{source}: axes.{name} is empty; give at least one value or remove the axis")
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"{source}: axes.{name} repeats a value: {values}")
    raw = base.to_dict()
    for value in values:  # check each value alone first, so the error names the axis
        raw[section][key] = value
        try:
            RunConfig.from_dict(raw, where=source)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc} (from axes.{name} = {value!r})") from None
    return Axis(name=name, path=dotted, values=tuple(values))


def _with_axis_settings(axes: tuple[Axis, ...], raw: Any, base: RunConfig, source: str) -> tuple[Axis, ...]:
    """Attach [axis_settings.<axis>.<value>.<section>] tables to their axes, each checked: the axis
    and value exist, the fields are config fields that no axis sweeps and no other axis's values
    set, and the base config with the value and its settings is valid."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: [axis_settings] must be a table: [axis_settings.<axis>.<value>.<section>]")
    by_name = {axis.name: axis for axis in axes}
    swept = {axis.path for axis in axes}
    set_by: dict[str, str] = {}
    attached = {}
    for name, per_value in raw.items():
        where = f"{source}: axis_settings.{name}"
        if name not in by_name:
            raise ValueError(f"{where}: there is no axis {name!r} in [axes] (axes: {sorted(by_name)})")
        axis = by_name[name]
        if not isinstance(per_value, dict):
            raise ValueError(f"{where} must be a table of the axis's values, e.g. [axis_settings.{name}.<value>.train]")
        known = {str(v): v for v in axis.values}
        settings: dict[str, dict[str, Any]] = {}
        for value_key, sections in per_value.items():
            here = f"{where}.{value_key}"
            if value_key not in known:
                raise ValueError(f"{here}: {value_key!r} is not a value of axes.{name} ({list(known)})")
            if not isinstance(sections, dict) or not all(isinstance(t, dict) for t in sections.values()):
                raise ValueError(f"{here} must hold config tables, e.g. [axis_settings.{name}.{value_key}.train] lr = 1e-3")
            flat = {}
            for section, fields in sections.items():
                if section not in ("data", "model", "train"):
                    raise ValueError(f"{here}.{section}: not a config table; use data, model or train")
                valid = table_keys(section)
                for key, setting in fields.items():
                    path = f"{section}.{key}"
                    if key not in valid:
                        raise ValueError(f"{here}.{section}: '{key}' is not a field of [{section}]; valid: {sorted(valid)}")
                    if path in swept:
                        raise ValueError(f"{here}: {path} is an axis of its own; remove it from one of them")
                    if path in ("train.task", "train.selection_metric"):
                        raise ValueError(f"{here}: {path} cannot follow another axis (the sweep's metric depends on "
                                         "it); make it an axis of its own or set it in [base.train]")
                    if set_by.setdefault(path, name) != name:
                        raise ValueError(f"{here}: {path} is set by the values of axes {set_by[path]} and {name} both; "
                                         "keep it with one axis")
                    flat[path] = setting
            resolved = base.to_dict()
            for path, setting in {axis.path: known[value_key], **flat}.items():
                section, _, key = path.partition(".")
                resolved[section][key] = setting
            try:
                RunConfig.from_dict(resolved, where=source)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{exc} (from axis_settings.{name}.{value_key})") from None
            settings[value_key] = flat
        attached[name] = dataclasses.replace(axis, settings=settings)
    return tuple(attached.get(axis.name, axis) for axis in axes)


def _setting_paths(axes: tuple[Axis, ...]) -> set[str]:
    return {path for axis in axes for flat in axis.settings.values() for path in flat}


def _check_metric_task(metric: str, base: RunConfig, axes: tuple[Axis, ...], source: str) -> None:
    """Every run must report the sweep metric: its train.task (base or axis values) must produce it."""
    task_axis = next((axis for axis in axes if axis.path == "train.task"), None)
    tasks = task_axis.values if task_axis is not None else (base.train.task,)
    wrong = [task for task in tasks if task not in METRIC_TASKS[metric]]
    if not wrong:
        return
    allowed = " or ".join(repr(task) for task in METRIC_TASKS[metric])
    if task_axis is None:
        where, fix = "[base.train]", f"set [base.train] task = {allowed}"
    else:
        where, fix = f"axes.{task_axis.name}", f"keep only {allowed} in axes.{task_axis.name}"
    reported = sorted(m for m, task_list in METRIC_TASKS.items() if wrong[0] in task_list)
    raise ValueError(
        f"{source}: sweep.metric = {metric!r} is not reported by runs with train.task = {wrong[0]!r} "
        f"(from {where}); {fix}, or set sweep.metric to one that task reports: {reported}"
    )


def _check_selection(metric: str, base: RunConfig, axes: tuple[Axis, ...], source: str) -> None:
    """Every run selects its epoch and early-stops on the sweep's metric (`SweepSpec.run_configs`
    sets train.selection_metric): the ledger's value, the tuner and the analysis all read
    `sweep.metric`, so a run selecting on another would report a value chosen by another rule."""
    if any(axis.path == "train.selection_metric" for axis in axes):
        raise ValueError(f"{source}: train.selection_metric follows sweep.metric and cannot be an axis; "
                         "remove that axis (sweep a metric by running one sweep per metric)")
    chosen = base.train.selection_metric
    if chosen not in ("auto", metric):
        raise ValueError(f"{source}: [base.train] selection_metric = {chosen!r} differs from sweep.metric = "
                         f"{metric!r}; remove it (runs select on sweep.metric)")


def _dispatch_from_table(raw: dict[str, Any], source: str) -> DispatchConfig:
    # slurm_additional_parameters is a free-form table of sbatch options, which config_from_dict's
    # field types cannot describe; DispatchConfig checks its keys and values itself.
    raw = dict(raw)
    extra = raw.pop("slurm_additional_parameters", {})
    dispatch = config_from_dict(DispatchConfig, raw, where=source, prefix="dispatch.")
    try:
        return dataclasses.replace(dispatch, slurm_additional_parameters=extra)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{source}: {exc}") from None


def spec_from_dict(raw: dict[str, Any], *, source: str = "<spec>", max_runs: int | None = None) -> SweepSpec:
    """Validate a parsed spec; every error names the offending field and how to fix it.

    max_runs: refuse a spec of more runs (`check_run_count`) before its axis values are validated
    one by one, which alone takes minutes for a million-value axis; None (the default, for
    reading back a launched sweep's spec) sets no limit.
    """
    unknown = sorted(set(raw) - set(_TOP_LEVEL))
    if unknown:
        raise ValueError(f"{source}: unknown table(s) {unknown}; valid tables are {list(_TOP_LEVEL)}")
    settings = config_from_dict(SweepSettings, raw.get("sweep", {}), where=source, prefix="sweep.")
    axes_raw = raw.get("axes", {})
    if not isinstance(axes_raw, dict):
        raise ValueError(f"{source}: [axes] must be a table of lists")
    design = config_from_dict(DesignConfig, raw.get("design", {}), where=source, prefix="design.")
    counts = [(name, len(values)) for name, values in axes_raw.items() if isinstance(values, list)]
    check_run_count(counts, design, source=source, max_runs=max_runs)
    base = config_from_dict(RunConfig, raw.get("base", {}), where=source, prefix="base.")
    axes = tuple(_resolve_axis(name, values, base, source) for name, values in axes_raw.items())
    paths = [axis.path for axis in axes]
    if len(set(paths)) != len(paths):
        raise ValueError(f"{source}: two axes set the same field: {paths}")
    axes = _with_axis_settings(axes, raw.get("axis_settings", {}), base, source)
    dispatch = _dispatch_from_table(raw.get("dispatch", {}), source)
    tracking = config_from_dict(TrackingConfig, raw.get("tracking", {}), where=source, prefix="tracking.")
    budget = config_from_dict(BudgetConfig, raw.get("budget", {}), where=source, prefix="budget.")
    ledger = config_from_dict(LedgerConfig, raw.get("ledger", {}), where=source, prefix="ledger.")
    tune = config_from_dict(TuneConfig, raw.get("tune", {}), where=source, prefix="tune.")
    cost = config_from_dict(CostInputs, raw.get("cost", {}), where=source, prefix="cost.")
    if tune.enabled:
        tuned_section, _, tuned_key = tune.param.partition(".")
        valid = set(table_keys(tuned_section))
        if tuned_key not in valid:
            raise ValueError(f"{source}: tune.param: '{tuned_key}' is not a field of [{tuned_section}]; valid: {sorted(valid)}")
        if tune.param in {axis.path for axis in axes} | _setting_paths(axes):
            raise ValueError(f"{source}: tune.param = '{tune.param}' is tuned, so it cannot also be an axis")
    _check_metric_task(settings.metric, base, axes, source)
    _check_selection(settings.metric, base, axes, source)
    if design.kind != "grid" and design.adjusted_path in set(paths) | _setting_paths(axes):
        raise ValueError(
            f"{source}: design.kind = '{design.kind}' solves {design.adjusted_path} for each run, so it "
            f"cannot also be an axis; remove that axis or set design.adjust to the other data field"
        )
    spec = SweepSpec(
        sweep=settings, axes=axes, base=base, dispatch=dispatch, tracking=tracking,
        design=design, budget=budget, ledger=ledger, tune=tune, cost=cost, source=source,
    )
    # Cross-field rules of each grid point (e.g. width divisible by heads) are checked when the
    # spec is planned (`sweeps.plan.plan_sweep`), which `sweep plan` and `sweep launch` do before
    # anything starts; each axis value was already checked alone above.
    return spec


def load_spec(path: str | Path, *, max_runs: int | None = None) -> SweepSpec:
    """The validated spec of a TOML file; `max_runs` as in `spec_from_dict`."""
    return spec_from_dict(read_toml(path, what="sweep spec"), source=str(path), max_runs=max_runs)
