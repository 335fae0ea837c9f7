"""Per-user input lengths of the leave-one-out splits, from event counts alone (torch-free).

The FLOPs planner uses these without generating data; `gr_core.data` builds its batches from the
same `CUTS`, and a test checks that the lengths agree with the batches.
"""

from __future__ import annotations

import numpy as np

from gr_core.config import DataConfig
from gr_core.synthetic import event_counts

# Events dropped from the end of a user's history before that split's input ends: training
# inputs stop before the validation target's predecessor (their last target is e_{n-3}).
CUTS: dict[str, int] = {"train": 3, "val": 2, "test": 1}


def split_lengths(event_counts_U: np.ndarray, split: str, max_seq_len: int) -> np.ndarray:
    """Per-user input lengths [U] of a split ("train", "val", "test"), truncated to max_seq_len."""
    if split not in CUTS:
        raise ValueError(f"split must be one of {list(CUTS)}, got {split!r}")
    return np.clip(np.asarray(event_counts_U, dtype=np.int64) - CUTS[split], 0, max_seq_len)


def train_sequence_lengths(cfg: DataConfig, max_seq_len: int) -> np.ndarray:
    """Per-user training input lengths [num_users], int64 (0 for a user with only 3 events).

    Each is also the number of supervised positions of that user per epoch.
    """
    return split_lengths(event_counts(cfg), "train", max_seq_len)
