"""Public data set loaders on small fixture files in each format, the cache, and config rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gr_core.config import DataConfig, RunConfig
from gr_core.lengths import dataset_num_items, split_lengths, train_sequence_lengths
from gr_core.loaders import load_real, load_sequence_data, min_count_filter

# (user, item, rating, timestamp) events, in file order. User 7's two events share a timestamp:
# the stable sort must keep their file order (item 30 before item 10).
EVENTS = [
    (7, 30, 5, 200), (3, 20, 2, 50), (7, 10, 4, 200), (3, 10, 4, 40), (7, 20, 1, 100), (3, 40, 5, 60),
]
# Users in original-id order (3, 7); items remapped in original-id order: 10->1, 20->2, 30->3, 40->4.
EXPECTED_ITEMS = [[1, 2, 4], [2, 3, 1]]
EXPECTED_TS = [[40, 50, 60], [100, 200, 200]]
EXPECTED_ACTIONS = [[1, 0, 1], [0, 1, 1]]


def _write(tmp_path: Path, source: str, events=EVENTS, corrupt: str | None = None, corrupt_at: int = 3) -> Path:
    if source == "ml-100k":
        name, lines = "u.data", [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in events]
    elif source == "ml-1m":
        name, lines = "ratings.dat", [f"{u}::{i}::{r}::{t}" for u, i, r, t in events]
    elif source == "ml-20m":
        name = "ratings.csv"
        lines = ["userId,movieId,rating,timestamp", *(f"{u},{i},{float(r)},{t}" for u, i, r, t in events)]
    else:
        name, lines = "ratings_Books.csv", [f"U{u:03d},B{i:05d},{float(r)},{t}" for u, i, r, t in events]
    if corrupt is not None:
        lines[corrupt_at - 1] = corrupt
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _per_user(data, name):
    arr = getattr(data, name)
    return [arr[data.offsets[u] : data.offsets[u + 1]].tolist() for u in range(data.num_users)]


@pytest.mark.parametrize("source", ["ml-100k", "ml-1m", "ml-20m"])
def test_movielens_formats_give_the_same_sequences(tmp_path, source):
    data = load_real(source, _write(tmp_path, source), cache_dir=tmp_path / "cache")
    assert data.num_users == 2 and data.num_items == 4
    assert _per_user(data, "item_ids") == EXPECTED_ITEMS
    assert _per_user(data, "timestamps") == EXPECTED_TS
    assert _per_user(data, "actions") == EXPECTED_ACTIONS  # rating >= 4


def test_ml20m_half_star_ratings_and_header(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,5,3.5,10\n1,6,4.0,11\n1,7,4.5,12\n")
    data = load_real("ml-20m", path, cache_dir=tmp_path / "c")
    assert data.actions.tolist() == [0, 1, 1]
    path.write_text("user,item,rating,timestamp\n1,5,3.5,10\n")
    with pytest.raises(ValueError, match=r"ratings\.csv, line 1: expected the header"):
        load_real("ml-20m", path, cache_dir=tmp_path / "c")


@pytest.mark.parametrize(
    ("source", "corrupt", "fragment"),
    [
        ("ml-100k", "3\t20\tfive\t50", "rating 'five' is not a number"),
        ("ml-100k", "3\t20\t2", "expected 4 fields"),
        ("ml-1m", "3::2x::2::50", "item id '2x' is not an integer"),
        ("ml-20m", "3,20,2.0,1e9x", "timestamp '1e9x' is not an integer"),
        ("amazon-books", "U003,,2.0,50", "empty item id"),
        ("amazon-books", "", "empty line"),
    ],
)
def test_corrupt_line_names_file_and_line(tmp_path, source, corrupt, fragment):
    path = _write(tmp_path, source, corrupt=corrupt, corrupt_at=3)
    line = 3  # ml-20m's header is line 1, so its third line is the second event
    with pytest.raises(ValueError) as info:
        load_real(source, path, cache_dir=tmp_path / "cache")
    assert f"{path}, line {line}: " in str(info.value)
    assert fragment in str(info.value)


def test_first_line_with_an_extra_field_is_rejected(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t2\t3\t4\t5\n1\t3\t3\t5\t6\n")
    with pytest.raises(ValueError, match=r"u\.data, line 1: expected 4 fields"):
        load_real("ml-100k", path, cache_dir=tmp_path / "cache")


def test_books_string_ids_and_one_pass_min_count_filter(tmp_path):
    rng = np.random.default_rng(0)
    events = []
    # Users 0-4 rate items 0-5 (5+ ratings each); user 9 rates only 3 items; item 99 is rated once.
    for u in range(5):
        for i in range(6):
            events.append((u, i, int(rng.integers(1, 6)), 1000 + 10 * i + u))
    events += [(9, 0, 5, 5), (9, 1, 5, 6), (9, 2, 5, 7), (0, 99, 5, 9999)]
    path = _write(tmp_path, "amazon-books", events=events)
    data = load_real("amazon-books", path, cache_dir=tmp_path / "cache")
    assert data.num_users == 5 and data.num_items == 6  # user 9 and item 99 dropped
    assert data.lengths.tolist() == [6] * 5
    # One pass: counts are taken on the whole file, not recomputed after dropping.
    users = np.array(["a"] * 5 + ["b"] * 5)
    items = np.array(["x"] * 4 + ["y"] + ["x"] * 5)
    assert min_count_filter(users, items, 5).tolist() == [True] * 4 + [False] + [True] * 5


def test_cache_is_keyed_by_content(tmp_path):
    cache = tmp_path / "cache"
    path = _write(tmp_path, "ml-100k")
    first = load_real("ml-100k", path, cache_dir=cache)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 1
    again = load_real("ml-100k", path, cache_dir=cache)
    assert np.array_equal(first.item_ids, again.item_ids)
    _write(tmp_path, "ml-100k", events=EVENTS[:-1])  # new content: a new cache entry
    changed = load_real("ml-100k", path, cache_dir=cache)
    assert len(sorted(cache.glob("*.npz"))) == 2
    assert changed.offsets[-1] == len(EVENTS) - 1


def test_real_source_through_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("GR_SCALING_CACHE", str(tmp_path / "cache"))
    events = [(u, i, 4, 100 * u + i) for u in range(1, 4) for i in range(1, 5 + u)]
    cfg = DataConfig(source="ml-100k", path=str(_write(tmp_path, "ml-100k", events=events)))
    data = load_sequence_data(cfg)
    assert dataset_num_items(cfg) == data.num_items == 7
    assert np.array_equal(train_sequence_lengths(cfg, 3), split_lengths(data.lengths, "train", 3))
    assert list(tmp_path.joinpath("cache").glob("ml-100k-*.npz"))


def test_a_process_builds_the_same_data_once_and_a_changed_file_again(tmp_path, monkeypatch):
    """The runs of a packed job share their data when their data config (and file) are the same."""
    synthetic = DataConfig(num_users=40, num_items=30, num_clusters=3, max_events=10)
    first = load_sequence_data(synthetic)
    assert load_sequence_data(synthetic) is first
    other = load_sequence_data(DataConfig(num_users=40, num_items=30, num_clusters=3, max_events=10, seed=1))
    assert other is not first and not np.array_equal(other.item_ids, first.item_ids)

    monkeypatch.setenv("GR_SCALING_CACHE", str(tmp_path / "cache"))
    events = [(u, i, 4, 100 * u + i) for u in range(1, 4) for i in range(1, 5 + u)]
    cfg = DataConfig(source="ml-100k", path=str(_write(tmp_path, "ml-100k", events=events)))
    loaded = load_sequence_data(cfg)
    assert load_sequence_data(cfg) is loaded
    _write(tmp_path, "ml-100k", events=events[:-1])  # the file is replaced: read again
    assert load_sequence_data(cfg).offsets[-1] == len(events) - 1


def test_a_file_no_user_can_be_trained_on_is_refused_before_training(tmp_path, monkeypatch):
    """EVENTS gives each user 3 events: validation and test targets, but no training target."""
    monkeypatch.setenv("GR_SCALING_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path, "ml-100k")
    cfg = DataConfig(source="ml-100k", path=str(path))
    with pytest.raises(ValueError, match=r"u\.data \(ml-100k\): leave-one-out needs >= 3 events per user") as info:
        load_sequence_data(cfg)
    assert "2 of 2 users have >= 3 events and 0 of 2 users have >= 4" in str(info.value)
    with pytest.raises(ValueError, match="leave-one-out"):
        train_sequence_lengths(cfg, 8)  # the planner's FLOPs count refuses it too
    assert dataset_num_items(cfg) == 4  # counting items needs no trainable user


def test_user_fraction_keeps_a_nested_deterministic_share_of_users_and_every_item(tmp_path, monkeypatch):
    monkeypatch.setenv("GR_SCALING_CACHE", str(tmp_path / "cache"))
    events = [(u, 1 + (u * 7 + k) % 50, 4, 1000 * u + k) for u in range(1, 401) for k in range(5 + u % 4)]
    path = str(_write(tmp_path, "ml-100k", events=events))
    whole = load_sequence_data(DataConfig(source="ml-100k", path=path))

    def users(fraction: float, seed: int = 0) -> set[tuple[int, ...]]:
        data = load_sequence_data(DataConfig(source="ml-100k", path=path, user_fraction=fraction, seed=seed))
        assert data.num_items == whole.num_items == 50  # the item set (and model size) of the whole file
        return {tuple(s) for s in _per_user(data, "timestamps")}  # timestamps identify the users here

    quarter, half = users(0.25), users(0.5)
    assert quarter < half < {tuple(s) for s in _per_user(whole, "timestamps")}  # nested
    assert 70 <= len(quarter) <= 130 and 170 <= len(half) <= 230  # ~100 and ~200 of 400
    assert users(0.25) == quarter and users(0.25, seed=1) != quarter  # deterministic, from data.seed
    cfg = DataConfig(source="ml-100k", path=path, user_fraction=0.25)
    lengths = load_sequence_data(cfg).lengths
    assert np.array_equal(train_sequence_lengths(cfg, 8), split_lengths(lengths, "train", 8))  # D: the tokens trained


def test_user_fraction_leaves_existing_run_ids_alone_and_names_its_rules():
    assert RunConfig().run_id == RunConfig.from_dict({"data": {"user_fraction": 1.0}}).run_id
    real = {"source": "ml-100k", "path": "u.data"}
    assert (RunConfig.from_dict({"data": {**real, "user_fraction": 0.5}}).run_id
            != RunConfig.from_dict({"data": real}).run_id)
    # The id of the default config, as sweeps recorded it before the field existed.
    assert RunConfig().run_id == "d20e787e2e9f"
    for raw, fragment in (
        ({"data": {**real, "user_fraction": 0.0}}, "data.user_fraction must be in (0, 1]"),
        ({"data": {**real, "user_fraction": 1.5}}, "data.user_fraction must be in (0, 1]"),
        ({"data": {"user_fraction": 0.5}}, "synthetic data sets them with data.num_users"),
    ):
        with pytest.raises(ValueError, match="run.toml: ") as info:
            RunConfig.from_dict(raw, where="run.toml")
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"data": {"source": "ml-1m"}}, "data.source='ml-1m' needs data.path"),
        ({"data": {"source": "ml-1m", "path": "r.dat", "num_users": 10}}, "data.num_users only apply"),
        ({"data": {"path": "r.dat"}}, "data.path is only read by real sources"),
        ({"data": {"source": "movielens"}}, "data.source must be one of"),
    ],
)
def test_config_rules_for_real_sources(raw, fragment):
    with pytest.raises(ValueError, match="run.toml: ") as info:
        RunConfig.from_dict(raw, where="run.toml")
    assert fragment in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        load_real("ml-1m", tmp_path / "nope.dat", cache_dir=tmp_path)


@pytest.mark.parametrize("source", ["ml-100k", "ml-1m", "ml-20m"])
def test_catalogue_candidates_number_every_item_of_the_item_file(tmp_path, source):
    """Items 5 and 25 are in the item file but never rated: with candidates = "catalogue" they get
    ids too (in original-id order), so they are embedded, sampled and ranked."""
    path = _write(tmp_path, source)
    catalogue = [5, 10, 20, 25, 30, 40]
    if source == "ml-100k":
        (tmp_path / "u.item").write_bytes("".join(f"{i}|T\xe9tre ({i})|01-Jan-1995||\n" for i in catalogue).encode("latin-1"))
    elif source == "ml-1m":
        (tmp_path / "movies.dat").write_bytes("".join(f"{i}::T\xe9tre ({i})::Drama\n" for i in catalogue).encode("latin-1"))
    else:
        (tmp_path / "movies.csv").write_text("movieId,title,genres\n" + "".join(f'{i},"Title, The ({i})",Drama\n' for i in catalogue))
    rated = load_real(source, path, cache_dir=tmp_path / "cache")
    full = load_real(source, path, candidates="catalogue", cache_dir=tmp_path / "cache")
    assert rated.num_items == 4 and full.num_items == 6
    # 10->2, 20->3, 30->5, 40->6 in the catalogue numbering (5->1, 25->4 unrated).
    assert _per_user(full, "item_ids") == [[2, 3, 6], [3, 5, 2]]
    assert _per_user(full, "timestamps") == EXPECTED_TS
    cfg = DataConfig(source=source, path=str(path), candidates="catalogue")
    assert dataset_num_items(cfg) == 6


def test_catalogue_candidates_need_the_item_file(tmp_path):
    path = _write(tmp_path, "ml-1m")
    with pytest.raises(ValueError, match=r"movies\.dat.*does not exist.*candidates='rated'"):
        load_real("ml-1m", path, candidates="catalogue", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="amazon-books"):
        DataConfig(source="amazon-books", path="x.csv", candidates="catalogue")
    with pytest.raises(ValueError, match="synthetic"):
        DataConfig(candidates="catalogue")


def test_real_ml100k_catalogue_equals_its_rated_items(real_ml100k):
    # ML-100K's 1682 movies are all rated at least once, so both candidate sets agree there.
    assert load_real("ml-100k", real_ml100k, candidates="catalogue").num_items == 1682
    assert load_real("ml-100k", real_ml100k).num_items == 1682
