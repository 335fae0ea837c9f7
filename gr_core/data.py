"""Event sequences, the leave-one-out split and jagged batches (no padding outside attention).

Leave-one-out by position, for a user with events e_0..e_{n-1} (n >= 3):

- test:       input e_0..e_{n-2},  target e_{n-1}
- validation: input e_0..e_{n-3},  target e_{n-2}
- training:   input e_0..e_{n-4},  targets e_1..e_{n-3} (every input position is supervised)

Every input keeps only its most recent `max_seq_len` items (training targets follow their
inputs). A split is described by `cut` (`gr_core.lengths.CUTS`), the number of events dropped from
the end before the input ends: 3 for training, 2 for validation, 1 for test; an evaluation target
is the event right after its input, a training target the event after each input position.
`SequenceData` and `train_sequence_lengths` live in torch-free modules and are re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from gr_core.lengths import CUTS, split_lengths, train_sequence_lengths
from gr_core.sequences import SequenceData

EvalSplit = Literal["val", "test"]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class JaggedBatch:
    """B sequences, T tokens, jagged by seq_offsets [B+1].

    item_ids, timestamps: [T] int64 inputs. target_ids: [T] (training: the next item at every
    position) or [B] (evaluation: the item after the last input). history_ids / history_offsets
    (evaluation only): each user's whole history before the target, jagged [Th] / [B+1], for
    filtering. max_seq_len: the model's N (attention normalisation, positional bias), not the
    longest sequence of the batch. user_ids [B]: row of each sequence in `SequenceData`.
    """

    item_ids: torch.Tensor
    timestamps: torch.Tensor
    seq_offsets: torch.Tensor
    target_ids: torch.Tensor
    max_seq_len: int
    user_ids: torch.Tensor
    history_ids: torch.Tensor | None = None
    history_offsets: torch.Tensor | None = None

    @property
    def num_seqs(self) -> int:
        return self.seq_offsets.numel() - 1

    @property
    def num_tokens(self) -> int:
        return self.item_ids.numel()

    def positions(self) -> torch.Tensor:
        """[T] index of each token within its sequence."""
        lengths = self.seq_offsets[1:] - self.seq_offsets[:-1]
        starts = torch.repeat_interleave(self.seq_offsets[:-1], lengths)
        return torch.arange(self.num_tokens, device=lengths.device) - starts


def _spans(
    lengths: np.ndarray, offsets: np.ndarray, cut: int, max_seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Start (flat index) and length of every user's truncated input, for a split's `cut`."""
    end = offsets[:-1] + lengths - cut
    span = np.clip(lengths - cut, 0, max_seq_len)
    return end - span, span


def _gather(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices [T] of the concatenated ranges [start, start + length) and their offsets [B+1]."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return flat, offsets


def train_batches(
    data: SequenceData, *, max_seq_len: int, batch_size: int, rng: np.random.Generator
) -> Iterator[JaggedBatch]:
    """One epoch of training batches over users in an order shuffled by `rng`.

    Users with an empty training input are skipped; every input position is supervised.
    """
    starts, lengths = _spans(data.lengths, data.offsets, CUTS["train"], max_seq_len)
    users = rng.permutation(np.flatnonzero(lengths > 0))
    for first in range(0, users.size, batch_size):
        rows = users[first : first + batch_size]
        flat, offsets = _gather(starts[rows], lengths[rows])
        yield JaggedBatch(
            item_ids=torch.from_numpy(data.item_ids[flat]),
            timestamps=torch.from_numpy(data.timestamps[flat]),
            seq_offsets=torch.from_numpy(offsets),
            target_ids=torch.from_numpy(data.item_ids[flat + 1]),
            max_seq_len=max_seq_len,
            user_ids=torch.from_numpy(rows.astype(np.int64)),
        )


def eval_batches(
    data: SequenceData, *, split: EvalSplit, max_seq_len: int, batch_size: int
) -> Iterator[JaggedBatch]:
    """Validation or test batches in user order: last-position targets [B] plus histories to filter.

    Users too short for the split (fewer than 3 events for validation, 2 for test) are skipped.
    """
    if split not in ("val", "test"):  # checked here, not at the first next()
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    return _eval_batches(data, CUTS[split], max_seq_len, batch_size)


def _eval_batches(data: SequenceData, cut: int, max_seq_len: int, batch_size: int) -> Iterator[JaggedBatch]:
    starts, lengths = _spans(data.lengths, data.offsets, cut, max_seq_len)
    users = np.flatnonzero(lengths > 0)
    for first in range(0, users.size, batch_size):
        rows = users[first : first + batch_size]
        flat, offsets = _gather(starts[rows], lengths[rows])
        hist_flat, hist_offsets = _gather(data.offsets[rows], data.lengths[rows] - cut)
        yield JaggedBatch(
            item_ids=torch.from_numpy(data.item_ids[flat]),
            timestamps=torch.from_numpy(data.timestamps[flat]),
            seq_offsets=torch.from_numpy(offsets),
            target_ids=torch.from_numpy(data.item_ids[starts[rows] + lengths[rows]]),
            max_seq_len=max_seq_len,
            user_ids=torch.from_numpy(rows.astype(np.int64)),
            history_ids=torch.from_numpy(data.item_ids[hist_flat]),
            history_offsets=torch.from_numpy(hist_offsets),
        )


__all__ = [
    "EvalSplit",
    "JaggedBatch",
    "SequenceData",
    "eval_batches",
    "split_lengths",
    "train_batches",
    "train_sequence_lengths",
]
