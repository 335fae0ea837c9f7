"""Users' event sequences as flat numpy arrays (torch-free, so planners can import it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class SequenceData:
    """All users' events, concatenated user after user in time order (jagged by `offsets`).

    item_ids [E] int64 in 1..num_items (0 is the padding id and never appears);
    timestamps [E] int64 seconds, non-decreasing within a user; actions [E] int8 in {0, 1};
    offsets [U+1] int64: user u's events are [offsets[u], offsets[u+1]).
    """

    item_ids: np.ndarray
    timestamps: np.ndarray
    actions: np.ndarray
    offsets: np.ndarray
    num_items: int

    def __post_init__(self) -> None:
        num_events = int(self.offsets[-1]) if self.offsets.size else -1
        if self.offsets.ndim != 1 or self.offsets.size < 1 or self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must be 1-D [U+1], start at 0 and be non-decreasing")
        for name in ("item_ids", "timestamps", "actions"):
            if getattr(self, name).shape != (num_events,):
                raise ValueError(f"{name} must have shape [E] = [{num_events}], got {getattr(self, name).shape}")
        if num_events and (self.item_ids.min() < 1 or self.item_ids.max() > self.num_items):
            raise ValueError(f"item ids must be in 1..num_items={self.num_items} (0 is padding)")

    @classmethod
    def from_sequences(
        cls,
        item_ids: Sequence[Sequence[int]],
        *,
        num_items: int,
        timestamps: Sequence[Sequence[int]] | None = None,
        actions: Sequence[Sequence[int]] | None = None,
    ) -> SequenceData:
        """Build from per-user lists; missing timestamps default to 0, 1, 2, ... and actions to 1."""
        lengths = [len(s) for s in item_ids]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def flat(seqs: Sequence[Sequence[int]] | None, default: np.ndarray, dtype: type) -> np.ndarray:
            if seqs is None:
                return default.astype(dtype)
            return np.concatenate([np.asarray(s, dtype=dtype) for s in seqs] or [np.zeros(0, dtype)])

        positions = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        return cls(
            item_ids=flat(item_ids, np.zeros(0), np.int64),
            timestamps=flat(timestamps, positions, np.int64),
            actions=flat(actions, np.ones(offsets[-1]), np.int8),
            offsets=offsets,
            num_items=num_items,
        )

    @property
    def num_users(self) -> int:
        return self.offsets.size - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def user_items(self, user: int) -> np.ndarray:
        return self.item_ids[self.offsets[user] : self.offsets[user + 1]]
