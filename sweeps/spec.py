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
import tomllib
from pathlib import Path
from typing import Any, Literal

from gr_core.config import RunConfig, config_from_dict
from slurm.config import DispatchConfig

# Short axis names for the grid dimensions researchers sweep most; any dotted config path works too.
AXIS_ALIASES: dict[str, str] = {
    "depth": "model.num_blocks",
    "width": "model.embedding_dim",
    "heads": "model.num_heads",
    "seq_len": "model.max_seq_len",
    "users": "data.num_users",
    "items": "data.num_items",
    "epochs": "train.epochs",
    "lr": "train.lr",
    "seed": "train.seed",
}

# Metrics a run reports (see gr_core.trainer); the bool says whether higher is better.
METRICS: dict[str, bool] = {
    "hr@10": True,
    "hr@50": True,
    "ndcg@10": True,
    "ndcg@50": True,
    "mrr": True,
}


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


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Axis:
    name: str  # as written in the spec ("width" or "model.dropout")
    path: str  # dotted config path ("model.embedding_dim")
    values: tuple[Any, ...]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SweepSpec:
    sweep: SweepSettings
    axes: tuple[Axis, ...]  # in spec order
    base: RunConfig
    dispatch: DispatchConfig
    tracking: TrackingConfig
    source: str = "<spec>"

    @property
    def num_runs(self) -> int:
        total = 1
        for axis in self.axes:
            total *= len(axis.values)
        return total

    def run_configs(self) -> list[tuple[dict[str, Any], RunConfig]]:
        """Expand the grid: one (axis values, resolved RunConfig) per point, in spec order."""
        base = self.base.to_dict()
        runs = []
        for point in itertools.product(*(axis.values for axis in self.axes)):
            raw = {section: dict(fields) for section, fields in base.items()}
            for axis, value in zip(self.axes, point):
                section, _, key = axis.path.partition(".")
                raw[section][key] = value
            axis_values = {axis.name: value for axis, value in zip(self.axes, point)}
            described = ", ".join(f"{k}={v}" for k, v in axis_values.items())
            runs.append((axis_values, RunConfig.from_dict(raw, where=f"{self.source} (grid point {described})")))
        return runs


_TOP_LEVEL = ("sweep", "axes", "base", "dispatch", "tracking")


def _resolve_axis(name: str, values: Any, base: RunConfig, source: str) -> Axis:
    dotted = AXIS_ALIASES.get(name, name)
    section, _, key = dotted.partition(".")
    valid_sections = ("data", "model", "train")
    if section not in valid_sections or not key:
        raise ValueError(
            f"{source}: axes.{name} is not a known axis; use one of {sorted(AXIS_ALIASES)} "
            "or a dotted config path such as 'model.dropout'"
        )
    if key not in {f.name for f in dataclasses.fields(getattr(RunConfig(), section))}:
        valid = sorted(f.name for f in dataclasses.fields(getattr(RunConfig(), section)))
        raise ValueError(f"{source}: axes.{name}: '{key}' is not a field of [{section}]; valid: {valid}")
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


def spec_from_dict(raw: dict[str, Any], *, source: str = "<spec>") -> SweepSpec:
    """Validate a parsed spec; every error names the offending field and how to fix it."""
    unknown = sorted(set(raw) - set(_TOP_LEVEL))
    if unknown:
        raise ValueError(f"{source}: unknown table(s) {unknown}; valid tables are {list(_TOP_LEVEL)}")
    settings = config_from_dict(SweepSettings, raw.get("sweep", {}), where=source, prefix="sweep.")
    axes_raw = raw.get("axes", {})
    if not isinstance(axes_raw, dict):
        raise ValueError(f"{source}: [axes] must be a table of lists")
    base = config_from_dict(RunConfig, raw.get("base", {}), where=source, prefix="base.")
    axes = tuple(_resolve_axis(name, values, base, source) for name, values in axes_raw.items())
    paths = [axis.path for axis in axes]
    if len(set(paths)) != len(paths):
        raise ValueError(f"{source}: two axes set the same field: {paths}")
    dispatch = config_from_dict(DispatchConfig, raw.get("dispatch", {}), where=source, prefix="dispatch.")
    tracking = config_from_dict(TrackingConfig, raw.get("tracking", {}), where=source, prefix="tracking.")
    spec = SweepSpec(sweep=settings, axes=axes, base=base, dispatch=dispatch, tracking=tracking, source=source)
    spec.run_configs()  # every grid point must be a valid run before anything starts
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"sweep spec {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return spec_from_dict(raw, source=str(path))
