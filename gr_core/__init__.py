"""gr_core: sequence data (synthetic and public sets), HSTU and SASRec, training and evaluation.

Names are exported lazily, so `import gr_core.config` (or `gr_core.lengths`) stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DataConfig": "gr_core.config",
    "ModelConfig": "gr_core.config",
    "TrainConfig": "gr_core.config",
    "RunConfig": "gr_core.config",
    "SequenceData": "gr_core.sequences",
    "event_counts": "gr_core.synthetic",
    "generate_synthetic": "gr_core.synthetic",
    "train_sequence_lengths": "gr_core.lengths",
    "dataset_num_items": "gr_core.lengths",
    "dataset_event_counts": "gr_core.lengths",
    "load_sequence_data": "gr_core.loaders",
    "load_real": "gr_core.loaders",
    "JaggedBatch": "gr_core.data",
    "train_batches": "gr_core.data",
    "eval_batches": "gr_core.data",
    "HSTU": "gr_core.hstu",
    "SASRec": "gr_core.sasrec",
    "build_model": "gr_core.encoder",
    "count_parameters": "gr_core.encoder",
    "normalized_entropy": "gr_core.ranking",
    "evaluate_ranking": "gr_core.ranking",
    "sampled_softmax_loss": "gr_core.losses",
    "evaluate": "gr_core.metrics",
    "ranking_metrics": "gr_core.metrics",
    "TrainResult": "gr_core.trainer",
    "train_run": "gr_core.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gr_core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
