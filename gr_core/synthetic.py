"""Synthetic generative-recommendation data with learnable, non-trivial structure.

Generative story (all randomness from `DataConfig.seed` through numpy Generators):

- Items 1..num_items are split into `num_clusters` clusters of near-equal size; inside a cluster,
  popularity is Zipf(`zipf_exponent`) over a random ranking of its items.
- Clusters follow a Markov chain whose rows are sparse Dirichlet draws (a few likely successors).
- Each user has a taste: a Dirichlet(`dirichlet_alpha`) mixture over clusters.
- Event t's cluster is drawn from  w_t * transition[cluster_{t-1}] + (1 - w_t) * taste, with
  w_t = transition_strength * exp(-gap_t / 6 h): right after the previous event the sequential
  component dominates, after a long pause the user's taste does. The decay is what gives the
  time buckets of HSTU's relative attention bias something to learn.
- The item is drawn from the cluster's popularity, resampled when the user already has it (up to a
  few tries, then any unseen item; a repeat is kept only if all tries fail).
- Timestamps (seconds) increase by log-normal gaps (median 1 h); the first event is at a random
  time within a year.
- A binary action per event: Bernoulli(sigmoid(log(num_clusters * taste[cluster]) + quality[item]
  + noise)), i.e. driven by user-item affinity.

Event counts per user are log-uniform in [min_events, max_events] and come from their own stream
(`event_counts`), so FLOPs can be planned without generating the data.

Learnable, not trivial (measured with this code on an H100; default config, test HR@10):
popularity 0.10, an oracle that knows the generator's clusters, tastes and transitions 0.285.
HSTU (2 blocks, lr 1e-3) reaches 0.14 with 2,000 users (data-limited: D 16/32/64/128 give
0.10/0.14/0.14/0.14 after 50 epochs), 0.20/0.21 (D 32/64) with 8,000 users after 25, and
0.18/0.20/0.22/0.22 (D 16/32/64/128) with 32,000 users after 10: more data and, given enough
data, bigger models learn more.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from gr_core.config import DataConfig
from gr_core.sequences import SequenceData

logger = logging.getLogger(__name__)

_TRANSITION_CONCENTRATION = 0.3  # Dirichlet alpha of each Markov row: a few likely next clusters
_MEDIAN_GAP_S = 3600.0
_GAP_LOG_SIGMA = 2.5
_SESSION_DECAY_S = 6 * 3600.0
_START_SPAN_S = 365 * 86400
_START_EPOCH_S = 1_500_000_000
_RESAMPLE_TRIES = 8


# Peak bytes the generator holds per cell of its [num_users, longest history] work arrays (ids,
# clusters, gaps, timestamps, affinities, logits and their temporaries) and per [num_users,
# num_clusters] cell (tastes and each step's mixture): measured with tracemalloc at 75-77 and
# about 23 bytes, rounded up so the estimate bounds the real peak.
_BYTES_PER_EVENT_CELL = 80
_BYTES_PER_CLUSTER_CELL = 32
_BYTES_PER_USER_COUNT = 32  # event_counts: the log-uniform draw, its exp/floor/clip temporaries


def available_memory_bytes() -> int | None:
    """Memory this process can still get: MemAvailable, capped by a cgroup v2 limit; None if unknown."""
    available: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    try:  # a container's limit can be far below the host's free memory
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            room = int(limit) - used
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def _check_fits(needed: int, what: str, fix: str) -> None:
    """ValueError before allocating `needed` bytes that this machine does not have (numpy would
    raise a MemoryError with a traceback, or the kernel would kill the run part-way)."""
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise ValueError(f"{what} needs about {needed / 2**30:,.1f} GiB of memory, more than the "
                         f"{available / 2**30:,.1f} GiB available here; {fix}")


def synthetic_peak_bytes(cfg: DataConfig, counts: np.ndarray) -> int:
    """Upper estimate of `generate_synthetic`'s peak memory for these per-user event counts [U]."""
    longest = int(counts.max()) if counts.size else 0
    return (cfg.num_users * (longest * _BYTES_PER_EVENT_CELL + cfg.num_clusters * _BYTES_PER_CLUSTER_CELL)
            + 64 * cfg.num_items)


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the event counts and for everything else."""
    counts_seq, data_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(counts_seq), np.random.default_rng(data_seq)


def event_counts(cfg: DataConfig) -> np.ndarray:
    """Events per user [num_users], int64, log-uniform in [min_events, max_events]. Cheap."""
    _check_fits(cfg.num_users * _BYTES_PER_USER_COUNT, f"drawing the event counts of data.num_users={cfg.num_users}",
                "lower data.num_users")
    rng, _ = _streams(cfg.seed)
    log_n = rng.uniform(np.log(cfg.min_events), np.log(cfg.max_events + 1), size=cfg.num_users)
    return np.clip(np.floor(np.exp(log_n)), cfg.min_events, cfg.max_events).astype(np.int64)


def _catalog(cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item ids sorted by cluster [I], their cluster [I], and the flat within-cluster CDF [I].

    The CDF of cluster c is stored shifted by c (values in (c, c+1]), so one `searchsorted` with
    c + u samples an item of cluster c for every user at once.
    """
    clusters = rng.permutation(np.arange(cfg.num_items) % cfg.num_clusters)
    order = np.argsort(clusters, kind="stable")
    item_ids = (order + 1).astype(np.int64)
    item_cluster = clusters[order]
    cdf = np.empty(cfg.num_items)
    starts = np.searchsorted(item_cluster, np.arange(cfg.num_clusters + 1))
    for c in range(cfg.num_clusters):
        size = starts[c + 1] - starts[c]
        weights = 1.0 / (rng.permutation(size) + 1.0) ** cfg.zipf_exponent
        cdf[starts[c] : starts[c + 1]] = c + np.cumsum(weights) / weights.sum()
        cdf[starts[c + 1] - 1] = c + 1.0  # exact upper edge despite rounding
    return item_ids, item_cluster, cdf


def _dirichlet_rows(rng: np.random.Generator, alpha: float, rows: int, cols: int) -> np.ndarray:
    # Gamma draws with a small shape can all underflow to 0; such a row falls back to uniform.
    g = rng.gamma(alpha, size=(rows, cols))
    total = g.sum(axis=1, keepdims=True)
    return np.where(total > 0, g / np.where(total > 0, total, 1.0), 1.0 / cols)


def _sample_categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of probs [U, C] by inverse CDF."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _draw_unseen(
    rng: np.random.Generator,
    cluster: np.ndarray,
    cdf: np.ndarray,
    item_ids: np.ndarray,
    history: np.ndarray,
    num_items: int,
) -> np.ndarray:
    """One item per user [U] from its cluster's popularity, avoiding the user's history [U, t]."""

    def from_cluster(rows: np.ndarray) -> np.ndarray:
        # side="right": cdf of cluster c lies in (c, c+1], so c + u with u in [0, 1) lands in c.
        return item_ids[np.searchsorted(cdf, cluster[rows] + rng.random(rows.size), side="right")]

    pick = from_cluster(np.arange(cluster.size))
    dup = (history == pick[:, None]).any(axis=1)
    # First retry within the cluster, then anywhere: a small cluster can run out for a heavy user.
    for attempt in range(2 * _RESAMPLE_TRIES):
        rows = np.flatnonzero(dup)
        if rows.size == 0:
            break
        if attempt < _RESAMPLE_TRIES:
            pick[rows] = from_cluster(rows)
        else:
            pick[rows] = rng.integers(1, num_items + 1, size=rows.size)
        dup[rows] = (history[rows] == pick[rows, None]).any(axis=1)
    return pick


def generate_synthetic(cfg: DataConfig) -> SequenceData:
    """Generate the data set described in the module docstring; deterministic from cfg.seed."""
    counts = event_counts(cfg)
    _check_fits(
        synthetic_peak_bytes(cfg, counts),
        f"generating data.num_users={cfg.num_users} histories of up to data.max_events={cfg.max_events} events "
        f"(longest drawn: {int(counts.max())})",
        "lower data.num_users or data.max_events (the generator holds num_users x longest-history arrays)",
    )
    _, rng = _streams(cfg.seed)
    num_users, num_clusters, max_n = cfg.num_users, cfg.num_clusters, int(counts.max())
    item_ids, item_cluster, cdf = _catalog(cfg, rng)
    transition = _dirichlet_rows(rng, _TRANSITION_CONCENTRATION, num_clusters, num_clusters)
    taste = _dirichlet_rows(rng, cfg.dirichlet_alpha, num_users, num_clusters)
    quality = rng.normal(size=cfg.num_items + 1)  # indexed by item id
    cluster_of_id = np.zeros(cfg.num_items + 1, dtype=np.int64)
    cluster_of_id[item_ids] = item_cluster

    items = np.zeros((num_users, max_n), dtype=np.int64)
    clusters = np.zeros((num_users, max_n), dtype=np.int64)
    gaps = np.ceil(rng.lognormal(np.log(_MEDIAN_GAP_S), _GAP_LOG_SIGMA, size=(num_users, max_n)))
    gaps[:, 0] = rng.integers(0, _START_SPAN_S, size=num_users)
    timestamps = _START_EPOCH_S + np.cumsum(gaps.astype(np.int64), axis=1)
    # Steps run over event index t for all users at once; users past their count are ignored later.
    for t in range(max_n):
        if t == 0:
            probs = taste
        else:
            w = cfg.transition_strength * np.exp(-gaps[:, t] / _SESSION_DECAY_S)
            probs = w[:, None] * transition[clusters[:, t - 1]] + (1.0 - w[:, None]) * taste
        c = _sample_categorical(rng, probs)
        items[:, t] = _draw_unseen(rng, c, cdf, item_ids, items[:, :t], cfg.num_items)
        clusters[:, t] = cluster_of_id[items[:, t]]
    affinity = np.log(num_clusters * np.take_along_axis(taste, clusters, axis=1) + 1e-2)
    logits = affinity + quality[items] + rng.normal(scale=0.5, size=items.shape)
    actions = (rng.random(items.shape) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int8)

    keep = np.arange(max_n)[None, :] < counts[:, None]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    logger.debug("synthetic data: %d users, %d events, %d items", num_users, offsets[-1], cfg.num_items)
    return SequenceData(
        item_ids=items[keep], timestamps=timestamps[keep], actions=actions[keep],
        offsets=offsets, num_items=cfg.num_items,
    )
