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

Stochastic Length (`gr_core.lengths`) replaces a subsampled user's training window by m + 1 of its
events in time order (m inputs, each target the next kept event). Target-aware evaluation batches
(ranking) append the evaluation target to the input: the model scores the action on the last
token, having seen it and the history before it.
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
HistoryFilter = Literal["full", "window"]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class JaggedBatch:
    """B sequences, T tokens, jagged by seq_offsets [B+1].

    item_ids, timestamps: [T] int64 inputs; actions: [T] int64 in {0, 1}, each input event's
    action (the ranking label of that position). target_ids: [T] (training: the next item at every
    position) or [B] (evaluation: the item after the last input; for target-aware batches the
    last input itself). history_ids / history_offsets
    (evaluation only): each user's whole history before the target, jagged [Th] / [B+1], for
    filtering. max_seq_len: the model's N (attention normalisation, positional bias), not the
    longest sequence of the batch. user_ids [B]: row of each sequence in `SequenceData`.
    request_timestamps [B]: the time of the event each sequence's last position predicts (the
    request time; DESIGN.md section 2): the last training target's timestamp, the evaluation
    target's, or for target-aware batches the target's own (their last input). HSTU's time bias
    scores query i at ts[i+1] and the last query at this time, in training and evaluation alike.
    """

    item_ids: torch.Tensor
    timestamps: torch.Tensor
    seq_offsets: torch.Tensor
    target_ids: torch.Tensor
    max_seq_len: int
    user_ids: torch.Tensor
    request_timestamps: torch.Tensor
    actions: torch.Tensor | None = None
    history_ids: torch.Tensor | None = None
    history_offsets: torch.Tensor | None = None

    @property
    def num_seqs(self) -> int:
        return self.seq_offsets.numel() - 1

    @property
    def num_tokens(self) -> int:
        return self.item_ids.numel()

    def select_sequences(self, start: int, stop: int) -> JaggedBatch:
        """Training sequences start..stop-1 as a batch of their own (per-token fields sliced)."""
        if self.history_ids is not None or self.target_ids.numel() != self.num_tokens:
            raise ValueError("select_sequences splits training batches (per-token targets) only")
        if not 0 <= start <= stop <= self.num_seqs:
            raise ValueError(f"sequences [{start}, {stop}) out of range for a batch of {self.num_seqs}")
        first, last = int(self.seq_offsets[start]), int(self.seq_offsets[stop])
        return JaggedBatch(
            item_ids=self.item_ids[first:last],
            timestamps=self.timestamps[first:last],
            seq_offsets=self.seq_offsets[start : stop + 1] - first,
            target_ids=self.target_ids[first:last],
            max_seq_len=self.max_seq_len,
            user_ids=self.user_ids[start:stop],
            request_timestamps=self.request_timestamps[start:stop],
            actions=self.actions[first:last] if self.actions is not None else None,
        )

    def to(self, device: torch.device) -> JaggedBatch:
        """This batch with every tensor on `device` (itself when they already are)."""
        if self.item_ids.device == device:
            return self
        moved = {
            f.name: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for f in dataclasses.fields(self)
            for value in (getattr(self, f.name),)
        }
        return JaggedBatch(**moved)

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


def _subsampled_rows(
    rows: np.ndarray, starts: np.ndarray, lengths: np.ndarray, subsampled: np.ndarray, m: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input and target flat indices [T] and offsets [B+1] with Stochastic Length applied."""
    inputs, targets, counts = [], [], []
    for row in rows:
        start, n = int(starts[row]), int(lengths[row])
        if subsampled[row]:
            keep = start + np.sort(rng.choice(n + 1, size=m + 1, replace=False))
            inputs.append(keep[:-1])
            targets.append(keep[1:])
        else:
            idx = np.arange(start, start + n)
            inputs.append(idx)
            targets.append(idx + 1)
        counts.append(inputs[-1].size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return np.concatenate(inputs), np.concatenate(targets), offsets


def train_batches(
    data: SequenceData,
    *,
    max_seq_len: int,
    batch_size: int,
    rng: np.random.Generator,
    subsampled: np.ndarray | None = None,
    subsample_length: int = 0,
) -> Iterator[JaggedBatch]:
    """One epoch of training batches over users in an order shuffled by `rng`.

    Users with an empty training input are skipped; every input position is supervised.
    subsampled [U] (bool, from `gr_core.lengths.stochastic_length_subsampled`) marks the users
    cut to `subsample_length` inputs by Stochastic Length; their kept positions are drawn from rng.
    """
    starts, lengths = _spans(data.lengths, data.offsets, CUTS["train"], max_seq_len)
    users = rng.permutation(np.flatnonzero(lengths > 0))
    if subsampled is not None and subsampled.any():
        if not 1 <= subsample_length < int(lengths[subsampled].min()):
            raise ValueError(
                f"subsample_length={subsample_length} must be >= 1 and shorter than every subsampled input"
            )
    else:
        subsampled = None
    for first in range(0, users.size, batch_size):
        rows = users[first : first + batch_size]
        if subsampled is not None and subsampled[rows].any():
            flat, target_flat, offsets = _subsampled_rows(rows, starts, lengths, subsampled, subsample_length, rng)
        else:
            flat, offsets = _gather(starts[rows], lengths[rows])
            target_flat = flat + 1
        yield JaggedBatch(
            item_ids=torch.from_numpy(data.item_ids[flat]),
            timestamps=torch.from_numpy(data.timestamps[flat]),
            seq_offsets=torch.from_numpy(offsets),
            target_ids=torch.from_numpy(data.item_ids[target_flat]),
            max_seq_len=max_seq_len,
            user_ids=torch.from_numpy(rows.astype(np.int64)),
            # Every training sequence is non-empty: its last target is the event after its input.
            request_timestamps=torch.from_numpy(data.timestamps[target_flat[offsets[1:] - 1]]),
            actions=torch.from_numpy(data.actions[flat].astype(np.int64)),
        )


def eval_batches(
    data: SequenceData,
    *,
    split: EvalSplit,
    max_seq_len: int,
    batch_size: int,
    target_aware: bool = False,
    by_length: bool = False,
    history: HistoryFilter = "full",
) -> Iterator[JaggedBatch]:
    """Validation or test batches in user order: last-position targets [B] plus histories to filter.

    Users too short for the split (fewer than 3 events for validation, 2 for test) are skipped.
    target_aware: the input ends with the target itself (truncated to max_seq_len with it), for
    the ranking task; the same users, the same target events.
    by_length: users in order of input length (stable) instead of user order, so that a batch
    pads little inside attention; the set of (user, target) pairs is the same.
    history: the items a user's ranking filters out (`history_ids`): "full", every event before
    the target; "window", only the (retrieval) input window of the last max_seq_len of them.
    """
    if split not in ("val", "test"):  # checked here, not at the first next()
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if history not in ("full", "window"):
        raise ValueError(f"history must be 'full' or 'window', got {history!r}")
    return _eval_batches(data, CUTS[split], max_seq_len, batch_size, target_aware, by_length, history)


def _eval_batches(
    data: SequenceData, cut: int, max_seq_len: int, batch_size: int, target_aware: bool, by_length: bool,
    history: HistoryFilter,
) -> Iterator[JaggedBatch]:
    window_starts, retrieval_lengths = _spans(data.lengths, data.offsets, cut, max_seq_len)
    input_cut = cut - 1 if target_aware else cut
    starts, lengths = _spans(data.lengths, data.offsets, input_cut, max_seq_len)
    users = np.flatnonzero(retrieval_lengths > 0)
    if by_length:
        users = users[np.argsort(lengths[users], kind="stable")]
    for first in range(0, users.size, batch_size):
        rows = users[first : first + batch_size]
        flat, offsets = _gather(starts[rows], lengths[rows])
        if history == "full":
            hist_flat, hist_offsets = _gather(data.offsets[rows], data.lengths[rows] - cut)
        else:
            hist_flat, hist_offsets = _gather(window_starts[rows], retrieval_lengths[rows])
        target_flat = data.offsets[rows] + data.lengths[rows] - cut
        yield JaggedBatch(
            item_ids=torch.from_numpy(data.item_ids[flat]),
            timestamps=torch.from_numpy(data.timestamps[flat]),
            seq_offsets=torch.from_numpy(offsets),
            target_ids=torch.from_numpy(data.item_ids[target_flat]),
            max_seq_len=max_seq_len,
            user_ids=torch.from_numpy(rows.astype(np.int64)),
            request_timestamps=torch.from_numpy(data.timestamps[target_flat]),
            actions=torch.from_numpy(data.actions[flat].astype(np.int64)),
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
