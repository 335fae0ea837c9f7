"""Run configuration: frozen dataclasses for data, model and training, loadable from TOML.

This module imports no torch, so a config or a sweep spec can be validated on a login node in
milliseconds. Each component receives only its own sub-config (`DataConfig`, `ModelConfig`,
`TrainConfig`); `RunConfig` only groups them and gives the run its stable id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

# config_from_dict is re-exported: sweeps.spec, slurm.config and scaling.cost build theirs with it.
from gr_core.config_io import apply_overrides, check_value, config_from_dict, construct, describe_overrides
from gr_core.config_io import read_toml, require, require_finite, typed_values
from gr_core.families import FAMILIES, OPTION_DEFAULTS, FamilyName, FamilyOptions

__all__ = [
    "METRICS", "METRIC_TASKS", "REAL_SOURCES", "SHARED_MODEL_FIELDS", "SYNTHETIC_FIELDS", "DataConfig", "ModelConfig",
    "RunConfig", "TrainConfig", "apply_overrides", "config_from_dict", "read_toml", "replace_path", "replace_paths",
    "table_keys",
]


_require = require
_require_finite = require_finite


# Metrics a run reports (`gr_core.trainer`); the bool says whether higher is better.
METRICS: dict[str, bool] = {
    "hr@10": True,
    "hr@50": True,
    "ndcg@10": True,
    "ndcg@50": True,
    "mrr": True,
    "ne": False,  # normalized entropy of the ranking task; 1.0 is the base-rate predictor
}
# The train.task values whose runs report each metric: retrieval metrics need the retrieval
# task, NE the ranking task ("both" reports all of them).
METRIC_TASKS: dict[str, tuple[str, ...]] = {
    **{metric: ("retrieval", "both") for metric in ("hr@10", "hr@50", "ndcg@10", "ndcg@50", "mrr")},
    "ne": ("ranking", "both"),
}

DataSource = Literal["synthetic", "ml-100k", "ml-1m", "ml-20m", "amazon-books"]
REAL_SOURCES: tuple[str, ...] = ("ml-100k", "ml-1m", "ml-20m", "amazon-books")
# Fields that describe the synthetic generator; a real source must leave them at their defaults.
SYNTHETIC_FIELDS: tuple[str, ...] = (
    "num_users", "num_items", "num_clusters", "min_events", "max_events",
    "dirichlet_alpha", "zipf_exponent", "transition_strength",
)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    """The event sequences: a synthetic set (see `gr_core.synthetic`) or a public data set file.

    synthetic: users draw a Dirichlet mixture over item clusters; items have Zipf popularity inside
    their cluster; consecutive events follow a cluster-to-cluster Markov chain; each event carries a
    timestamp and a binary action driven by user-item affinity. Deterministic from `seed`.

    ml-100k (`u.data`), ml-1m (`ratings.dat`), ml-20m (`ratings.csv`), amazon-books (SNAP
    `ratings_Books.csv`): read from `path` by `gr_core.loaders` (cached by file hash); the action
    of an event is rating >= 4. The synthetic-only fields (`SYNTHETIC_FIELDS`) must keep their
    defaults; use `gr_core.lengths.dataset_num_items` for a real set's item count.

    candidates: the item set that is embedded, sampled as negatives and ranked in evaluation:
    "rated" (items with at least one event in the file) or "catalogue" (every item of the data
    set's item file beside `path`: ml-100k `u.item`, ml-1m `movies.dat`, ml-20m `movies.csv`, as
    upstream ranks over). Synthetic data has one item set, so it takes "rated" only.

    stochastic_length_alpha: Stochastic Length (HSTU paper, section 3.3), off when None; see
    `gr_core.lengths.stochastic_length_subsampled`. `seed` also draws which users it subsamples.

    user_fraction (real sources): train and evaluate on this fraction of the file's users, a
    deterministic draw from `seed` that is nested (a larger fraction keeps every user of a smaller
    one), so that it can be a sweep's data-volume axis; the item set stays the file's, so models
    of every fraction are the same size (`gr_core.loaders.user_subsample`). Synthetic data sets
    their users with num_users.
    """

    source: DataSource = "synthetic"
    path: str | None = None  # the data file of a real source
    num_users: int = 2000
    num_items: int = 1000
    num_clusters: int = 20
    min_events: int = 8  # per user, before the leave-one-out split
    max_events: int = 60
    dirichlet_alpha: float = 0.1  # user taste concentration: small = few favourite clusters
    zipf_exponent: float = 1.1  # item popularity within a cluster
    transition_strength: float = 0.7  # weight of the sequential (Markov) component
    stochastic_length_alpha: float | None = None  # in (1, 2]; None = every history whole
    candidates: Literal["rated", "catalogue"] = "rated"
    user_fraction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _require_finite(self, "data")
        _require(self.candidates in ("rated", "catalogue"),
                 f"data.candidates must be 'rated' or 'catalogue', got {self.candidates!r}")
        if self.source == "synthetic":
            _require(self.path is None, f"data.path is only read by real sources; got path={self.path!r} "
                     "with data.source='synthetic'")
            _require(self.candidates == "rated", "data.candidates='catalogue' needs a real data.source with an "
                     "item file (synthetic data has one item set); remove it")
            
        else:
            _require(bool(self.path), f"data.source={self.source!r} needs data.path (the data file)")
            _require(self.candidates == "rated" or self.source != "amazon-books",
                     "data.candidates='catalogue' is not available for amazon-books (no item file); use 'rated'")
            changed = [
                name for name in SYNTHETIC_FIELDS
                if getattr(self, name) != _DATA_DEFAULTS[name]
            ]
            _require(
                not changed,
                f"data.{', data.'.join(changed)} only apply to data.source='synthetic', not "
                f"{self.source!r}; remove them",
            )
        _require(0.0 < self.user_fraction <= 1.0,
                 f"data.user_fraction must be in (0, 1] (the share of the file's users kept), got {self.user_fraction}")
        _require(self.source != "synthetic" or self.user_fraction == 1.0,
                 "data.user_fraction subsamples a real source's users; synthetic data sets them with data.num_users")
        _require(self.num_users >= 1, f"data.num_users must be >= 1, got {self.num_users}")
        _require(self.num_items >= 2, f"data.num_items must be >= 2, got {self.num_items}")
        _require(
            1 <= self.num_clusters <= self.num_items,
            f"data.num_clusters must be in [1, num_items={self.num_items}], got {self.num_clusters}",
        )
        _require(
            3 <= self.min_events <= self.max_events,
            "data.min_events must be >= 3 (train, validation and test items) and <= "
            f"data.max_events; got min_events={self.min_events}, max_events={self.max_events}",
        )
        _require(
            self.max_events >= 4,
            f"data.max_events must be >= 4, got {self.max_events}: leave-one-out holds out each user's last 2 "
            "events, so only a user with 4 or more has a training target",
        )
        _require(self.dirichlet_alpha > 0, f"data.dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        _require(self.zipf_exponent >= 0, f"data.zipf_exponent must be >= 0, got {self.zipf_exponent}")
        _require(
            0.0 <= self.transition_strength <= 1.0,
            f"data.transition_strength must be in [0, 1], got {self.transition_strength}",
        )
        alpha = self.stochastic_length_alpha
        _require(
            alpha is None or 1.0 < alpha <= 2.0,
            f"data.stochastic_length_alpha must be in (1, 2] (the paper's range), got {alpha}",
        )


_DATA_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(DataConfig)}


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """The sequence encoder: the fields every family shares, and the family's own `options`.

    family names an entry of `gr_core.families.FAMILIES` (HSTU, DESIGN.md section 2; the SASRec
    baseline, `gr_core.sasrec`). All families share the input (x = E[id] * sqrt(D) + P[pos],
    dropout), the L2-normalised output, the loss and the evaluation. `options` holds the keys only
    that family reads (the options dataclass of its module in `gr_core.families`); None means the
    family's defaults. In TOML, `--set` and sweep axes they are plain [model] keys beside the
    shared ones (`from_table`, `to_dict`), so a run id is a hash of one flat table. A key of
    another family is rejected unless it has that family's default: nothing is silently ignored,
    and switching `model.family` in a sweep keeps working.
    """

    family: FamilyName = "hstu"
    num_blocks: int = 2
    embedding_dim: int = 32
    num_heads: int = 1
    max_seq_len: int = 50  # histories are truncated to their most recent max_seq_len items
    dropout: float = 0.2
    temperature: float = 0.05
    options: FamilyOptions | None = None  # the family's own keys; None = its defaults

    def __post_init__(self) -> None:
        _require_finite(self, "model")
        family = FAMILIES.get(self.family)
        _require(family is not None, f"model.family must be one of {sorted(FAMILIES)}, got {self.family!r}")
        assert family is not None  # for type checkers; _require raised otherwise
        if self.options is None:
            object.__setattr__(self, "options", family.options())  # frozen: set once, here
        _require(
            isinstance(self.options, family.options),
            f"model.options is a {type(self.options).__name__}, but model.family={self.family!r} takes "
            f"{family.options.__name__}",
        )
        _require(self.num_blocks >= 1, f"model.num_blocks must be >= 1, got {self.num_blocks}")
        _require(self.embedding_dim >= 1, f"model.embedding_dim must be >= 1, got {self.embedding_dim}")
        _require(self.num_heads >= 1, f"model.num_heads must be >= 1, got {self.num_heads}")
        family.validate(self)
        _require(self.max_seq_len >= 2, f"model.max_seq_len must be >= 2, got {self.max_seq_len}")
        _require(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")
        _require(self.temperature > 0, f"model.temperature must be > 0, got {self.temperature}")

    @property
    def dqk(self) -> int:
        """Per-head query/key width, as the family resolves it."""
        return FAMILIES[self.family].head_dims(self)[0]

    @property
    def dv(self) -> int:
        """Per-head value width, as the family resolves it."""
        return FAMILIES[self.family].head_dims(self)[1]

    def to_dict(self) -> dict[str, Any]:
        """The flat [model] table: the shared fields, then the family's options (the run id hashes it)."""
        assert self.options is not None  # set by __post_init__
        out = {name: getattr(self, name) for name in SHARED_MODEL_FIELDS}
        out.update((f.name, getattr(self.options, f.name)) for f in dataclasses.fields(self.options))
        return out

    @classmethod
    def from_table(cls, raw: Mapping[str, Any], *, where: str = "config", prefix: str = "model.") -> ModelConfig:
        """A [model] table (flat: shared and family keys together) -> ModelConfig.

        Errors name the file and dotted key: a wrong type, an unknown key (listing the valid keys
        of the family), or a key of another family set away from that family's default.
        """
        name = check_value(raw.get("family", _DEFAULT_FAMILY), FamilyName, where, f"{prefix}family")
        family = FAMILIES[name]
        own = {f.name for f in dataclasses.fields(family.options)}
        shared = {k: v for k, v in raw.items() if k in SHARED_MODEL_FIELDS}
        rest = {k: v for k, v in raw.items() if k not in SHARED_MODEL_FIELDS and k not in own}
        unknown = sorted(k for k in rest if k not in OPTION_DEFAULTS)
        if unknown:
            table = f"[{prefix.rstrip('.')}]"
            raise ValueError(
                f"{where}: unknown key(s) {unknown} in {table}; valid keys are {sorted([*SHARED_MODEL_FIELDS, *own])}"
            )
        changed = [k for k, v in rest.items() if not any(v == default for default in OPTION_DEFAULTS[k])]
        if changed:
            raise ValueError(
                f"{where}: {prefix}{f', {prefix}'.join(changed)} do not apply to {prefix}family={name!r}; remove them"
            )
        options = config_from_dict(
            family.options, {k: v for k, v in raw.items() if k in own}, where=where, prefix=prefix
        )
        values = typed_values(cls, shared, where=where, prefix=prefix)
        return construct(cls, {**values, "options": options}, where=where)


SHARED_MODEL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "options")
_DEFAULT_FAMILY: str = next(f.default for f in dataclasses.fields(ModelConfig) if f.name == "family")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """AdamW training of one or both tasks, evaluated every `eval_every` epochs.

    task: "retrieval" (sampled-softmax next item, full-ranking HR/NDCG/MRR), "ranking"
    (target-aware action prediction, `gr_core.ranking`, NE) or "both" (loss = retrieval +
    ranking_weight * ranking; every metric reported).
    selection_metric: the validation metric that picks the reported epoch and drives early
    stopping (any of `METRICS` the task reports); "auto" = ndcg@10, or ne for task "ranking". A
    sweep sets it to its `sweep.metric`, so the trainer, the tuner and the ledger agree.
    patience: stop when `patience` epochs have passed since the best validation value (checked at
    evaluations); None trains all epochs. Test metrics are those of the best validation epoch.
    eval_filter: the items removed from a user's ranking in evaluation: "full" (every item of the
    user's history before the target) or "window" (only the items of the truncated input window,
    as upstream).
    batch_size is the global batch (sequences per optimizer step, over all processes); each step's
    loss is the mean over the global batch's supervised positions however it is split.
    engine: "torch" (a plain AdamW loop, one process) or "deepspeed" (a DeepSpeed engine with ZeRO
    stage `zero_stage`, one or more processes: `gr_core.engines`). grad_accumulation: micro-batches
    per optimizer step in each process. grad_clip: maximum global gradient norm (None: no clipping).
    num_threads: torch's intra-op threads; "auto" takes the CPUs the run's job was given
    (`gr_core.threads.intra_op_threads`: a local sweep's share of the machine, Slurm's
    cpus_per_task), for runs that own their cores; the default 1 suits max_parallel runs per core.
    device: "auto" (the GPU when torch sees one, else the CPU), "cpu" or "cuda"; a process of a
    multi-process run takes GPU LOCAL_RANK (`gr_core.devices`). precision: "fp32", or "bf16"
    (torch autocast over the forward pass and the losses: bfloat16 matmuls, float32 weights,
    optimizer state and gradients; evaluation scores are computed in float32 either way).
    """

    task: Literal["retrieval", "ranking", "both"] = "retrieval"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.98
    weight_decay: float = 0.0
    num_negatives: int = 128
    ranking_weight: float = 1.0  # weight of the ranking loss with task "both"
    eval_batch_size: int = 512
    eval_every: int = 1  # epochs between validation passes
    selection_metric: str = "auto"  # one of METRICS, or "auto"
    eval_filter: Literal["full", "window"] = "full"
    patience: int | None = None  # early stopping, in epochs without a better validation value
    seed: int = 0
    num_threads: int | Literal["auto"] = 1  # torch intra-op threads per run (`gr_core.threads.intra_op_threads`)
    engine: Literal["torch", "deepspeed"] = "torch"
    zero_stage: int = 0  # DeepSpeed ZeRO stage 0-3 (engine "deepspeed" only)
    grad_accumulation: int = 1
    grad_clip: float | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        _require_finite(self, "train")
        _require(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        _require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)")
        _require(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.num_negatives >= 1, f"train.num_negatives must be >= 1, got {self.num_negatives}")
        _require(self.ranking_weight > 0, f"train.ranking_weight must be > 0, got {self.ranking_weight}")
        _require(
            self.ranking_weight == 1.0 or self.task == "both",
            f"train.ranking_weight only applies to train.task='both', got task={self.task!r}",
        )
        _require(self.eval_batch_size >= 1, f"train.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        _require(self.eval_every >= 1, f"train.eval_every must be >= 1, got {self.eval_every}")
        _require(
            self.selection_metric == "auto" or self.selection_metric in METRICS,
            f"train.selection_metric must be 'auto' or one of {sorted(METRICS)}, got {self.selection_metric!r}",
        )
        _require(
            self.task in METRIC_TASKS.get(self.selection, ()),
            f"train.selection_metric={self.selection!r} is not reported by train.task={self.task!r}; choose one "
            f"of {sorted(m for m, tasks in METRIC_TASKS.items() if self.task in tasks)}",
        )
        _require(self.eval_filter in ("full", "window"),
                 f"train.eval_filter must be 'full' or 'window', got {self.eval_filter!r}")
        _require(
            self.patience is None or self.patience >= 1, f"train.patience must be >= 1 or unset, got {self.patience}"
        )
        _require(
            self.num_threads == "auto" or (
                isinstance(self.num_threads, int) and not isinstance(self.num_threads, bool) and self.num_threads >= 1),
            f'train.num_threads must be an integer >= 1 or "auto" (the CPUs the run\'s job was given), '
            f"got {self.num_threads!r}",
        )
        _require(0 <= self.zero_stage <= 3, f"train.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        _require(
            self.zero_stage == 0 or self.engine == "deepspeed",
            f"train.zero_stage={self.zero_stage} needs train.engine='deepspeed' (got {self.engine!r})",
        )
        _require(
            self.grad_accumulation >= 1, f"train.grad_accumulation must be >= 1, got {self.grad_accumulation}"
        )
        _require(
            self.grad_clip is None or self.grad_clip > 0,
            f"train.grad_clip must be > 0 or unset (no clipping), got {self.grad_clip}",
        )
        _require(self.device in ("auto", "cpu", "cuda"),
                 f"train.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        _require(self.precision in ("fp32", "bf16"), f"train.precision must be 'fp32' or 'bf16', got {self.precision!r}")

    @property
    def selection(self) -> str:
        """The validation metric that selects the reported epoch ("auto" resolved)."""
        if self.selection_metric != "auto":
            return self.selection_metric
        return "ne" if self.task == "ranking" else "ndcg@10"

    @property
    def retrieval(self) -> bool:
        return self.task in ("retrieval", "both")

    @property
    def ranking(self) -> bool:
        return self.task in ("ranking", "both")


# (section, field, default) of fields added to a config after sweeps recorded run ids: see `RunConfig.run_id`.
FIELDS_ADDED_LATER: tuple[tuple[str, str, Any], ...] = (("data", "user_fraction", 1.0),)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class RunConfig:
    """One training run: the three component configs. Its id is a stable hash of the resolved values."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        # Hand-rolled rather than dataclasses.asdict (which deep-copies): planning a 10,000-run
        # grid calls this twice per run. Every section is a flat table of scalars (the model's
        # family options inline, `ModelConfig.to_dict`).
        return {
            "data": {f.name: getattr(self.data, f.name) for f in dataclasses.fields(self.data)},
            "model": self.model.to_dict(),
            "train": {f.name: getattr(self.train, f.name) for f in dataclasses.fields(self.train)},
        }

    @property
    def run_id(self) -> str:
        """The hash of the resolved values. A field added after sweeps were recorded
        (`FIELDS_ADDED_LATER`) is left out while it has its default, so the runs of existing sweeps
        keep their ids (a relaunch finds them complete rather than planning them anew)."""
        values = self.to_dict()
        for section, name, default in FIELDS_ADDED_LATER:
            if values[section].get(name, default) == default:
                values[section].pop(name, None)
        blob = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str = "config") -> RunConfig:
        return config_from_dict(cls, raw, where=where)

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> RunConfig:
        """The config of a TOML file, with `overrides` ({"model.num_blocks": 4, ...}) applied to the
        file's values before the whole is validated once (see `apply_overrides`)."""
        raw = read_toml(path, what="run config")
        where = str(path) if not overrides else f"{path} with {describe_overrides(overrides)}"
        return cls.from_dict(apply_overrides(raw, overrides or {}), where=where)


def replace_paths(config: RunConfig, overrides: Mapping[str, Any], *, where: str | None = None) -> RunConfig:
    """`config` with several dotted fields set, validated once together like TOML input."""
    raw = apply_overrides(config.to_dict(), overrides)
    return RunConfig.from_dict(raw, where=where or (describe_overrides(overrides) if overrides else "config"))


def replace_path(config: RunConfig, dotted: str, value: Any) -> RunConfig:
    """Return `config` with one field (e.g. ``"model.embedding_dim"``) set, validated like TOML input."""
    return replace_paths(config, {dotted: value}, where="config")


def table_keys(section: str) -> tuple[str, ...]:
    """The keys a run config's [section] table accepts; for [model], the shared keys and every
    family's (which of them a given family takes is checked with the whole table)."""
    if section == "model":
        return (*SHARED_MODEL_FIELDS, *OPTION_DEFAULTS)
    tables: dict[str, type] = {"data": DataConfig, "train": TrainConfig}
    if section not in tables:
        raise ValueError(f"{section!r} is not a section of a run config; use one of ['data', 'model', 'train']")
    return tuple(f.name for f in dataclasses.fields(tables[section]))
