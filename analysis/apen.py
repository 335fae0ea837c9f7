"""Approximate Entropy (ApEn) of users' item sequences: the data-quality term of the Performance Law.

Pincus's ApEn (PNAS 1991), as the Performance Law paper (arXiv 2412.00430) computes it on item-id
sequences (USTC-StarTeam/Performance-Law, `entropy_metrics/ApEN_count.py`):

    for a sequence x of n items and window length m, the n - m + 1 windows w_i = x[i : i + m];
    C_i(m) = #{ j : max_k |w_i[k] - w_j[k]| <= r } / (n - m + 1)   (Chebyshev distance, self included)
    phi(m) = mean_i ln C_i(m)
    ApEn(m, r) = |phi(m) - phi(m + 1)|

per user, on the user's last `max_len` items, then averaged over users. Self-matches are counted
(so C_i > 0 and nothing is undefined). A constant sequence has ApEn 0; an i.i.d. uniform sequence
over K symbols tends to ln K as n grows (from below: ApEn is biased low on short sequences).

A sequence in which no window of m items repeats (most users of a large catalogue: ML-100K's
users rate up to a few hundred of its 1,682 films, each once) has only self-matches, so
ApEn = ln((n - m + 1) / (n - m)), about 1 / n: a function of its length alone, not of its order.
On such data ApEn says how long the sequences are, and the Performance Law's D' = tokens x ApEn
is close to the number of users.

Item ids are labels, so a tolerance r < 1 (exact match of every position, the paper's default
0.2) is the meaningful one; it is computed by counting equal windows (sorting, O(n log n) per
user). r >= 1 (a distance on id values, which the paper's sweep also tried) is computed from all
pairs in chunks, O(n^2 m) per user. `approximate_entropy_direct` is the definition written as
loops, the reference the tests hold both paths to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gr_core.sequences import SequenceData

DEFAULT_M = 2
DEFAULT_R = 0.2  # the paper script's default: on integer ids, an exact match
_PAIR_CHUNK = 1024  # windows per block of the all-pairs path


def _windows(x: np.ndarray, m: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, m)


def _phi(x: np.ndarray, m: int, r: float) -> float:
    windows = _windows(x, m)
    count = windows.shape[0]
    if r < 1.0 and np.issubdtype(x.dtype, np.integer):
        _, inverse, matches = np.unique(windows, axis=0, return_inverse=True, return_counts=True)
        per_window = matches[inverse.reshape(-1)]
    else:
        per_window = np.empty(count, dtype=np.int64)
        for start in range(0, count, _PAIR_CHUNK):
            block = windows[start : start + _PAIR_CHUNK].astype(np.float64)
            distance = np.abs(block[:, None, :] - windows[None, :, :].astype(np.float64)).max(axis=2)
            per_window[start : start + _PAIR_CHUNK] = (distance <= r).sum(axis=1)
    return float(np.mean(np.log(per_window / count)))


def approximate_entropy(x: Sequence[int] | np.ndarray, m: int = DEFAULT_M, r: float = DEFAULT_R) -> float:
    """ApEn(m, r) of one sequence (the definition above); 0.0 when it has fewer than m + 1 items."""
    _check(m, r)
    values = np.asarray(x)
    if values.ndim != 1:
        raise ValueError(f"a sequence must be 1-D, got shape {values.shape}")
    if values.size < m + 1:
        return 0.0
    return abs(_phi(values, m, r) - _phi(values, m + 1, r))


def approximate_entropy_direct(x: Sequence[int], m: int = DEFAULT_M, r: float = DEFAULT_R) -> float:
    """The same statistic as loops over windows: the reference for `approximate_entropy`."""
    _check(m, r)
    n = len(x)
    if n < m + 1:
        return 0.0

    def phi(length: int) -> float:
        windows = [x[i : i + length] for i in range(n - length + 1)]
        total = 0.0
        for a in windows:
            close = sum(1 for b in windows if max(abs(p - q) for p, q in zip(a, b)) <= r)
            total += math.log(close / len(windows))
        return total / len(windows)

    return abs(phi(m) - phi(m + 1))


def dataset_apen(data: SequenceData, *, max_len: int, m: int = DEFAULT_M, r: float = DEFAULT_R) -> float:
    """Mean ApEn over the users of `data`, each on its last `max_len` items (the paper's per-user
    truncation to the model's sequence length); users with fewer than m + 1 items count 0."""
    if max_len < m + 1:
        raise ValueError(f"max_len must be >= m + 1 = {m + 1}, got {max_len}")
    offsets = data.offsets
    users = len(offsets) - 1
    if users == 0:
        raise ValueError("the data set has no users")
    values = [
        approximate_entropy(data.item_ids[max(offsets[u], offsets[u + 1] - max_len) : offsets[u + 1]], m, r)
        for u in range(users)
    ]
    return float(np.mean(values))


def _check(m: int, r: float) -> None:
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"the window length m must be an integer >= 1, got {m!r}")
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"the tolerance r must be finite and >= 0, got {r!r}")


__all__ = ["DEFAULT_M", "DEFAULT_R", "approximate_entropy", "approximate_entropy_direct", "dataset_apen"]
