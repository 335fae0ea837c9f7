"""Real-data fixtures: a tiny MovieLens-100K file written per test, and the real ML-100K if present."""

from __future__ import annotations

from pathlib import Path

import pytest

# (user, item, rating, timestamp) in u.data's format. 5 users with 5..9 events over 7 distinct
# original item ids (remapped to 1..7); every user keeps a training input after the splits.
TINY_ML100K_ITEMS = 7
TINY_ML100K_USERS = 5
TINY_ML100K_EVENTS = [
    (user, 10 * (1 + (user + k) % TINY_ML100K_ITEMS), 1 + (user * k) % 5, 1000 * user + k)
    for user in range(1, TINY_ML100K_USERS + 1)
    for k in range(4 + user)
]
# ../shared beside the checkout (as in CI): 943 users, 1682 items, 100,000 ratings.
REAL_ML100K = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k" / "u.data"


@pytest.fixture
def tiny_ml100k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Path of a tiny `u.data`; the loader's cache goes under tmp_path."""
    monkeypatch.setenv("GR_SCALING_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in TINY_ML100K_EVENTS))
    return path


@pytest.fixture
def real_ml100k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Path of the real MovieLens-100K `u.data` (skips the test when it is not on this machine)."""
    if not REAL_ML100K.is_file():
        pytest.skip(f"MovieLens-100K not found at {REAL_ML100K}")
    monkeypatch.setenv("GR_SCALING_CACHE", str(tmp_path / "cache"))
    return REAL_ML100K
