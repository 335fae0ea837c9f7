"""Per-user input lengths of the leave-one-out splits, and Stochastic Length (torch-free).

The FLOPs planner uses these without building batches; `gr_core.data` builds its batches from the
same `CUTS` and the same `stochastic_length_subsampled` draw, and tests check that the lengths
agree with the batches.

Stochastic Length (HSTU paper, section 3.3, eq. 4). With N = max_seq_len, a user whose training
input has n positions is trained on

- the whole sequence if n <= N^(alpha/2);
- otherwise, with probability 1 - N^alpha / n^2, a subsequence of N^(alpha/2) positions, and the
  whole sequence with probability N^alpha / n^2,

so that the expected attention cost per user is at most 2 N^alpha: O(N^alpha d) instead of
O(N^2 d). Here N^(alpha/2) is floored to an integer m. A subsampled user keeps m + 1 of the n + 1
events of its training window (inputs and their targets), chosen uniformly without replacement
and kept in time order, and is trained on them as an ordinary sequence: m inputs, each target the
next kept event. Which users are subsampled is drawn once per data set from `DataConfig.seed`
(one Bernoulli draw per user, the same every epoch), so that the training FLOPs are exact and
plannable from the config alone; the kept positions are drawn afresh every epoch from the
training seed. The paper draws per training example; per user and run the expected cost is the
same.
"""

from __future__ import annotations

import math

import numpy as np

from gr_core.config import DataConfig

# Events dropped from the end of a user's history before that split's input ends: training
# inputs stop before the validation target's predecessor (their last target is e_{n-3}).
CUTS: dict[str, int] = {"train": 3, "val": 2, "test": 1}
_SL_STREAM = 0x5E1  # spawn key of the Stochastic Length draw, apart from the generator's streams


def split_lengths(event_counts_U: np.ndarray, split: str, max_seq_len: int) -> np.ndarray:
    """Per-user input lengths [U] of a split ("train", "val", "test"), truncated to max_seq_len."""
    if split not in CUTS:
        raise ValueError(f"split must be one of {list(CUTS)}, got {split!r}")
    return np.clip(np.asarray(event_counts_U, dtype=np.int64) - CUTS[split], 0, max_seq_len)


def dataset_event_counts(cfg: DataConfig) -> np.ndarray:
    """Events per user [U], int64: drawn (synthetic, cheap) or from the loaded file (cached)."""
    if cfg.source == "synthetic":
        from gr_core.synthetic import event_counts

        return event_counts(cfg)
    from gr_core.loaders import load_sequence_data

    return load_sequence_data(cfg).lengths


def dataset_num_items(cfg: DataConfig) -> int:
    """Items of the data set (ids 1..num_items): `cfg.num_items` for synthetic, else the file's."""
    if cfg.source == "synthetic":
        return cfg.num_items
    from gr_core.loaders import load_real

    assert cfg.path is not None  # DataConfig requires it for real sources
    # load_real, not load_sequence_data: counting items needs no user a split can train on.
    return load_real(cfg.source, cfg.path, candidates=cfg.candidates).num_items


def stochastic_length_target(max_seq_len: int, alpha: float) -> int:
    """m = floor(N^(alpha/2)): the length a subsampled sequence is cut to (at least 1)."""
    return max(1, int(math.floor(max_seq_len ** (alpha / 2.0) + 1e-9)))


def stochastic_length_subsampled(
    train_lengths_U: np.ndarray, max_seq_len: int, alpha: float | None, seed: int
) -> np.ndarray:
    """Which users [U] (bool) Stochastic Length subsamples: n > m, with probability 1 - N^alpha / n^2."""
    n = np.asarray(train_lengths_U, dtype=np.float64)
    if alpha is None:
        return np.zeros(n.shape, dtype=bool)
    m = stochastic_length_target(max_seq_len, alpha)
    u = np.random.default_rng(np.random.SeedSequence([seed, _SL_STREAM])).random(n.shape)
    with np.errstate(divide="ignore"):
        p_subsample = np.where(n > m, 1.0 - float(max_seq_len) ** alpha / np.maximum(n, 1.0) ** 2, 0.0)
    return u < p_subsample


def stochastic_length_plan(event_counts_U: np.ndarray, cfg: DataConfig, max_seq_len: int) -> tuple[np.ndarray, int]:
    """(which users [U] Stochastic Length subsamples, the input length m they are cut to).

    event_counts_U: each user's number of events. Without `cfg.stochastic_length_alpha`, no user
    and m = 0. The one draw that training, FLOP planning and FLOP measurement all use.
    """
    lengths = split_lengths(event_counts_U, "train", max_seq_len)
    alpha = cfg.stochastic_length_alpha
    subsampled = stochastic_length_subsampled(lengths, max_seq_len, alpha, cfg.seed)
    return subsampled, stochastic_length_target(max_seq_len, alpha) if alpha is not None else 0


def train_sequence_lengths(cfg: DataConfig, max_seq_len: int) -> np.ndarray:
    """Per-user training input lengths [num_users], int64 (0 for a user with only 3 events).

    Each is also the number of supervised positions of that user per epoch, after Stochastic
    Length when `cfg.stochastic_length_alpha` is set.
    """
    counts = dataset_event_counts(cfg)
    lengths = split_lengths(counts, "train", max_seq_len)
    subsampled, m = stochastic_length_plan(counts, cfg, max_seq_len)
    return np.where(subsampled, m, lengths).astype(np.int64)


def stochastic_length_sparsity(lengths_before: np.ndarray, lengths_after: np.ndarray) -> float:
    """1 - sum(n_after^2) / sum(n_before^2): the attention work SL removes (the paper's Table 3 notion)."""
    before = float((np.asarray(lengths_before, dtype=np.float64) ** 2).sum())
    after = float((np.asarray(lengths_after, dtype=np.float64) ** 2).sum())
    return 1.0 - after / before if before else 0.0
