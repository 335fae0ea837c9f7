"""Public data sets -> `SequenceData`, cached by file hash (torch-free).

Formats (DESIGN.md section 2):

- ml-100k  `u.data`            tab-separated `user item rating timestamp`, no header
- ml-1m    `ratings.dat`       `UserID::MovieID::Rating::Timestamp`, no header
- ml-20m   `ratings.csv`       header `userId,movieId,rating,timestamp`; ratings in half stars
- amazon-books `ratings_Books.csv` (SNAP) `user,item,rating,timestamp`, no header, string ids;
  users and items with fewer than 5 ratings are dropped in one pass (both counted on the whole
  file, then filtered together; upstream's preprocessing, not an iterated 5-core)

Every source becomes the same `SequenceData`: users in order of their original id, each user's
events sorted by timestamp with a stable sort (ties keep file order), item ids remapped to
1..num_items in order of their original id (0 stays padding), action = rating >= 4.

Candidate items (`DataConfig.candidates`): "rated" numbers the items that have events;
"catalogue" numbers every item of the data set's item file beside the ratings (`CATALOGUE_FILES`:
ml-100k `u.item`, ml-1m `movies.dat`, ml-20m `movies.csv`; first field = item id), in order of
original id, so never-rated items are embedded, sampled as negatives and ranked too (upstream's
full-ranking protocol ranks the whole catalogue).

Parsing uses pandas' C reader; if it fails or sees a malformed value, a line-by-line pass finds
the first bad line and raises ValueError naming the file and the 1-based line number. The parsed
arrays are cached as .npz under `cache_dir` (default `$GR_SCALING_CACHE` or
~/.cache/gr-scaling/datasets), keyed by the file's sha256, the source and `CACHE_VERSION`, so a
changed file or loader never reads a stale cache. The cache location is not part of the run
config: it does not change what a run computes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gr_core.config import REAL_SOURCES, DataConfig
from gr_core.sequences import SequenceData

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: the original item keys are cached too (catalogue remapping)
POSITIVE_RATING = 4.0  # action = 1 when rating >= this (MovieLens stars, Amazon stars)
BOOKS_MIN_RATINGS = 5
# The item file of each source with one, its separator and encoding (MovieLens titles are latin-1
# in the older sets); only its first field, the item id, is read.
CATALOGUE_FILES: dict[str, tuple[str, str, str, bool]] = {
    "ml-100k": ("u.item", "|", "latin-1", False),
    "ml-1m": ("movies.dat", "::", "latin-1", False),
    "ml-20m": ("movies.csv", ",", "utf-8", True),  # header line
}
_HASH_CHUNK = 1 << 22


def default_cache_dir() -> Path:
    env = os.environ.get("GR_SCALING_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gr-scaling" / "datasets"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- parsing: (user keys [E], item keys [E], ratings [E] float64, timestamps [E] int64) --------

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _check_line(path: Path, lineno: int, fields: list[str], id_type: type) -> None:
    """Raise ValueError naming `path:lineno` if one parsed line is malformed."""
    where = f"{path}, line {lineno}"
    if len(fields) != 4:
        raise ValueError(f"{where}: expected 4 fields (user, item, rating, timestamp), got {len(fields)}")
    user, item, rating, ts = (f.strip() for f in fields)
    for name, value in (("user", user), ("item", item)):
        if not value:
            raise ValueError(f"{where}: empty {name} id")
        if id_type is int:
            try:
                int(value)
            except ValueError:
                raise ValueError(f"{where}: {name} id {value!r} is not an integer") from None
    try:
        r = float(rating)
    except ValueError:
        raise ValueError(f"{where}: rating {rating!r} is not a number") from None
    if not np.isfinite(r):
        raise ValueError(f"{where}: rating {rating!r} is not finite")
    try:
        int(ts)
    except ValueError:
        raise ValueError(f"{where}: timestamp {ts!r} is not an integer") from None


def _find_bad_line(path: Path, split: Callable[[str], list[str]], id_type: type, header: bool) -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if header and lineno == 1:
                continue
            if not line.strip():
                raise ValueError(f"{path}, line {lineno}: empty line")
            _check_line(path, lineno, split(line.rstrip("\r\n")), id_type)


def _check_first_line(path: Path, split: Callable[[str], list[str]], id_type: type, header: bool) -> None:
    # pandas would take a consistent extra column for an index; the field count is checked here.
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not (header and lineno == 1):
                _check_line(path, lineno, split(line.rstrip("\r\n")), id_type)
                return
    raise ValueError(f"{path}: no data lines")


def _read(path: Path, *, sep: str, header: bool, string_ids: bool) -> Columns:
    """Parse a 4-column ratings file; raises ValueError with the file and line of a bad line."""
    import pandas as pd  # only when parsing (a cache miss)

    id_type = str if string_ids else int

    def split(line: str) -> list[str]:
        return line.split(sep)

    _check_first_line(path, split, id_type, header)
    id_dtype = str if string_ids else np.int64
    try:
        source: io.StringIO | Path = path
        c_sep = sep
        if len(sep) > 1:  # pandas' C reader takes one-character separators only
            source = io.StringIO(path.read_text(encoding="utf-8", errors="strict").replace(sep, "\t"))
            c_sep = "\t"
        frame = pd.read_csv(
            source, sep=c_sep, header=0 if header else None, names=["user", "item", "rating", "timestamp"],
            dtype={"user": id_dtype, "item": id_dtype, "rating": np.float64, "timestamp": np.int64},
            engine="c", skip_blank_lines=False, na_filter=True, keep_default_na=False, na_values=[""],
        )
        bad = frame.isna().to_numpy().any() or not np.isfinite(frame["rating"].to_numpy()).all()
    except (ValueError, TypeError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        _find_bad_line(path, split, id_type, header)
        raise ValueError(f"{path}: could not be parsed ({exc})") from exc
    if bad:
        _find_bad_line(path, split, id_type, header)
        raise ValueError(f"{path}: missing or non-finite values")  # internal: the scan should have found it
    return (
        frame["user"].to_numpy(), frame["item"].to_numpy(),
        frame["rating"].to_numpy(np.float64), frame["timestamp"].to_numpy(np.int64),
    )


def _check_header(path: Path, expected: str) -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    if first.replace(" ", "") != expected:
        raise ValueError(f"{path}, line 1: expected the header {expected!r}, got {first!r}")


def parse_ratings(source: str, path: Path) -> Columns:
    """The raw columns of one file of `source` (no filtering, file order)."""
    if source == "ml-100k":
        return _read(path, sep="\t", header=False, string_ids=False)
    if source == "ml-1m":
        return _read(path, sep="::", header=False, string_ids=False)
    if source == "ml-20m":
        _check_header(path, "userId,movieId,rating,timestamp")
        return _read(path, sep=",", header=True, string_ids=False)
    if source == "amazon-books":
        return _read(path, sep=",", header=False, string_ids=True)
    raise ValueError(f"unknown real data source {source!r}; valid ones are {list(REAL_SOURCES)}")


# --- to sequences -----------------------------------------------------------------------------


def _factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes [E] in 0..K-1, sorted unique keys [K]): np.unique's inverse, by hashing.

    pandas' hash-based factorize, because np.unique sorts all E keys, which is slow for tens of
    millions of string ids (Amazon Books).
    """
    import pandas as pd

    codes, uniques = pd.factorize(keys, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def min_count_filter(users: np.ndarray, items: np.ndarray, min_count: int) -> np.ndarray:
    """Boolean mask [E] of events whose user and item both have >= min_count events (one pass)."""
    user_inv, _ = _factorize(users)
    item_inv, _ = _factorize(items)
    return (np.bincount(user_inv)[user_inv] >= min_count) & (np.bincount(item_inv)[item_inv] >= min_count)


def to_sequences(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray, timestamps: np.ndarray
) -> tuple[SequenceData, np.ndarray]:
    """Group events by user (original id order), sort each user's by time (stable), remap items.

    Returns the sequences and the original key of each item id ([num_items]; id i is key i-1).
    """
    if users.size == 0:
        raise ValueError("no events left to build sequences from")
    user_idx, _ = _factorize(users)
    item_idx, item_keys = _factorize(items)
    # Stable two-key sort: by timestamp within user; ties keep file order.
    order = np.lexsort((np.arange(users.size), timestamps, user_idx))
    counts = np.bincount(user_idx, minlength=int(user_idx.max()) + 1)
    data = SequenceData(
        item_ids=(item_idx[order] + 1).astype(np.int64),
        timestamps=timestamps[order].astype(np.int64),
        actions=(ratings[order] >= POSITIVE_RATING).astype(np.int8),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        num_items=int(item_keys.size),
    )
    return data, np.asarray(item_keys)


def catalogue_path(source: str, ratings_path: str | Path) -> Path:
    """The item file beside a ratings file; ValueError naming the file when the source has none."""
    if source not in CATALOGUE_FILES:
        raise ValueError(f"data.candidates='catalogue' needs an item file, and {source} has none; use 'rated'")
    return Path(ratings_path).expanduser().parent / CATALOGUE_FILES[source][0]


def read_catalogue(source: str, ratings_path: str | Path) -> np.ndarray:
    """Sorted unique item ids (int64) of the source's item file beside `ratings_path`."""
    path = catalogue_path(source, ratings_path)
    _, sep, encoding, header = CATALOGUE_FILES[source]
    if not path.is_file():
        raise ValueError(f"data.candidates='catalogue' reads the item file {path}, which does not exist; "
                         f"put {path.name} beside data.path or use data.candidates='rated'")
    ids = []
    with open(path, encoding=encoding) as f:
        for lineno, line in enumerate(f, start=1):
            if (header and lineno == 1) or not line.strip():
                continue
            first = line.split(sep, 1)[0].strip()
            try:
                ids.append(int(first))
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: item id {first!r} is not an integer") from None
    if not ids:
        raise ValueError(f"{path}: no items")
    return np.unique(np.asarray(ids, dtype=np.int64))


def with_catalogue(data: SequenceData, item_keys: np.ndarray, catalogue: np.ndarray, *, where: str) -> SequenceData:
    """`data` renumbered over the catalogue's items (rated items missing from it are kept)."""
    keys = item_keys.astype(np.int64)
    missing = np.setdiff1d(keys, catalogue)
    if missing.size:
        logger.warning("%s: %d rated item(s) are not in the item file (e.g. %s); ranking them as well",
                       where, missing.size, missing[:3].tolist())
    universe = np.union1d(catalogue, keys)
    new_id = np.searchsorted(universe, keys) + 1  # [rated items]: id in the catalogue numbering
    return SequenceData(
        item_ids=new_id[data.item_ids - 1].astype(np.int64), timestamps=data.timestamps, actions=data.actions,
        offsets=data.offsets, num_items=int(universe.size),
    )


def build_sequences(source: str, path: Path) -> tuple[SequenceData, np.ndarray]:
    users, items, ratings, timestamps = parse_ratings(source, path)
    if source == "amazon-books":
        keep = min_count_filter(users, items, BOOKS_MIN_RATINGS)
        logger.info("%s: kept %d of %d ratings (users and items with >= %d)", path, keep.sum(), keep.size,
                    BOOKS_MIN_RATINGS)
        users, items, ratings, timestamps = users[keep], items[keep], ratings[keep], timestamps[keep]
    return to_sequences(users, items, ratings, timestamps)


# --- cache ------------------------------------------------------------------------------------


def _save(data: SequenceData, item_keys: np.ndarray, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(
            f, item_ids=data.item_ids, timestamps=data.timestamps, actions=data.actions,
            offsets=data.offsets, num_items=np.int64(data.num_items), item_keys=item_keys,
        )
    os.replace(tmp, target)


def _load(target: Path) -> tuple[SequenceData, np.ndarray]:
    with np.load(target) as z:
        data = SequenceData(
            item_ids=z["item_ids"], timestamps=z["timestamps"], actions=z["actions"],
            offsets=z["offsets"], num_items=int(z["num_items"]),
        )
        return data, z["item_keys"]


def load_real(
    source: str, path: str | Path, *, candidates: str = "rated", cache_dir: str | Path | None = None
) -> SequenceData:
    """`SequenceData` of a public data set file, from the cache when its hash was seen before.

    candidates: "rated" or "catalogue" (see the module docstring).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"data.path={str(path)!r} ({source}) is not a file")
    stat = path.stat()
    key = (source, str(path.resolve()), stat.st_size, stat.st_mtime_ns,
           str(Path(cache_dir) if cache_dir is not None else default_cache_dir()))
    if candidates == "rated":
        return _load_cached(*key)[0]
    if candidates != "catalogue":
        raise ValueError(f"data.candidates must be 'rated' or 'catalogue', got {candidates!r}")
    item_file = catalogue_path(source, path)
    if not item_file.is_file():
        raise ValueError(f"data.candidates='catalogue' reads the item file {item_file}, which does not exist; "
                         f"put {item_file.name} beside data.path or use data.candidates='rated'")
    return _load_with_catalogue(*key, item_file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_with_catalogue(
    source: str, path: str, size: int, mtime_ns: int, cache_dir: str, item_mtime_ns: int
) -> SequenceData:
    del item_mtime_ns  # part of the memo key only
    data, keys = _load_cached(source, path, size, mtime_ns, cache_dir)
    return with_catalogue(data, keys, read_catalogue(source, path), where=path)


@functools.lru_cache(maxsize=8)
def _load_cached(source: str, path: str, size: int, mtime_ns: int, cache_dir: str) -> tuple[SequenceData, np.ndarray]:
    # Memoised per process on (path, size, mtime): planners ask for the same lengths many times.
    del size, mtime_ns  # part of the memo key only
    digest = file_sha256(Path(path))
    target = Path(cache_dir) / f"{source}-{digest[:24]}-v{CACHE_VERSION}.npz"
    if target.is_file():
        try:
            return _load(target)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring unreadable cache %s (%s); rebuilding it", target, exc)
    data, keys = build_sequences(source, Path(path))
    try:
        _save(data, keys, target)
    except OSError as exc:
        logger.warning("could not write the data cache %s (%s); continuing without it", target, exc)
    logger.info("%s (%s): %d users, %d events, %d items; cached at %s", path, source, data.num_users,
                data.offsets[-1], data.num_items, target)
    return data, keys


# Leave-one-out (`gr_core.data`) holds out each user's last event for test and the one before for
# validation, so a user is validated with >= 3 events and has a training target with >= 4.
EVAL_MIN_EVENTS = 3
TRAIN_MIN_EVENTS = 4


def check_leave_one_out(data: SequenceData, *, where: str, fix: str) -> None:
    """ValueError naming `where` when no user could be trained or validated on, before any torch op
    (training would run zero steps and evaluation would concatenate nothing)."""
    lengths = data.lengths
    validated = int((lengths >= EVAL_MIN_EVENTS).sum())
    trained = int((lengths >= TRAIN_MIN_EVENTS).sum())
    if trained and validated:
        return
    longest = int(lengths.max()) if lengths.size else 0
    raise ValueError(
        f"{where}: leave-one-out needs >= {EVAL_MIN_EVENTS} events per user (the last two are the test and "
        f"validation targets) and >= {TRAIN_MIN_EVENTS} for a training target; {validated} of {data.num_users} "
        f"users have >= {EVAL_MIN_EVENTS} events and {trained} of {data.num_users} users have >= "
        f"{TRAIN_MIN_EVENTS} (the longest history has {longest}): {fix}"
    )


# The last synthetic data this process generated, with its config: the runs of a packed job
# (`sweeps.packing`) that share a data config generate it once (a file's data is memoised by
# `load_real`). Read-only to every user.
_last_generated: tuple[DataConfig, SequenceData] | None = None


def load_sequence_data(cfg: DataConfig, *, cache_dir: str | Path | None = None) -> SequenceData:
    """The run's `SequenceData`: generated (synthetic) or loaded (a real source), checked to have
    users that leave-one-out can train and validate on. The same config again in this process
    returns the data built last time (a file: while it is unchanged)."""
    global _last_generated
    if cfg.source == "synthetic" and _last_generated is not None and _last_generated[0] == cfg:
        return _last_generated[1]
    data = _build_sequence_data(cfg, cache_dir)
    if cfg.source == "synthetic":
        _last_generated = (cfg, data)
    return data


def _build_sequence_data(cfg: DataConfig, cache_dir: str | Path | None) -> SequenceData:
    if cfg.source == "synthetic":
        from gr_core.synthetic import generate_synthetic

        data = generate_synthetic(cfg)
        check_leave_one_out(data, where=f"synthetic data (data.max_events={cfg.max_events})",
                            fix="raise data.min_events or data.max_events")
        return data
    assert cfg.path is not None  # DataConfig requires it for real sources
    data = load_real(cfg.source, cfg.path, candidates=cfg.candidates, cache_dir=cache_dir)
    where, fix = f"data.path={cfg.path} ({cfg.source})", "use a file with longer user histories"
    if cfg.user_fraction < 1.0:
        data = user_subsample(data, cfg.user_fraction, seed=cfg.seed)
        where, fix = f"{where} with data.user_fraction={cfg.user_fraction}", f"{fix} or a larger data.user_fraction"
    check_leave_one_out(data, where=where, fix=fix)
    return data


_USER_FRACTION_STREAM = 0xF4AC  # spawn key of the user subsample's draw, apart from other streams


def user_subsample(data: SequenceData, fraction: float, *, seed: int) -> SequenceData:
    """The users whose uniform draw (one per user, in file order, from `seed`) is below `fraction`:
    nested across fractions (a user kept at 0.25 is kept at 0.5), about `fraction` of them, at
    least one. Every item id and the item count stay as they were."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    users = len(data.offsets) - 1
    draws = np.random.default_rng([seed, _USER_FRACTION_STREAM]).random(users)
    keep = draws < fraction
    if not keep.any():
        keep[int(np.argmin(draws))] = True
    lengths = np.diff(data.offsets)[keep]
    events = np.repeat(keep, np.diff(data.offsets))
    return SequenceData(
        item_ids=data.item_ids[events], timestamps=data.timestamps[events], actions=data.actions[events],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), num_items=data.num_items,
    )
