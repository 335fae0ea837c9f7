"""The ledger's storage backends for its tests: one parametrised fixture, as Optuna tests its own
storages (`optuna.testing.storages`), so every ledger test runs unchanged on each of them.

- "sqlite": the default, an SQLite file in the sweep directory (Optuna's heartbeat);
- "journal": Optuna's JournalFileBackend (`[ledger] url = "journal:PATH"`, for NFS), which has no
  heartbeat: the ledger keeps a timestamp system attr instead;
- "postgres": a real PostgreSQL server (`postgres_url`, tests/integration/pg_server.py),
  started once per session; each test gets a study name of its own in its one database.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from sweeps import optuna_adapter
from sweeps.ledger import Ledger, PlannedRun
from sweeps.storage import storage_url_for

BACKENDS = ("sqlite", "journal", "postgres")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Backend:
    """A ledger location: `url` and a study `name` no other test uses."""

    kind: str
    url: str
    name: str
    _opened: list[Ledger] = dataclasses.field(default_factory=list)

    def open(self, *, create: bool = True, name: str | None = None) -> Ledger:
        ledger = Ledger(self.url, self.name if name is None else name, create=create)
        self._opened.append(ledger)
        return ledger

    def close(self) -> None:
        """Release the database connections of every ledger opened here (the server's are few)."""
        for ledger in self._opened:
            if isinstance(ledger.storage, optuna.storages.RDBStorage):
                ledger.storage.engine.dispose()


def backend_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return storage_url_for(tmp_path, "journal:ledger.log" if kind == "journal" else None)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    opened = Backend(kind=kind, url=backend_url(kind, tmp_path, request), name=f"unit-{uuid.uuid4().hex[:12]}")
    yield opened
    opened.close()


@pytest.fixture()
def ledger(backend: Backend) -> Ledger:
    return backend.open()


def planned(run_id: str, width: int = 8) -> PlannedRun:
    return PlannedRun(
        run_id=run_id,
        axis_values={"width": width},
        config={"model": {"embedding_dim": width}},
        flops={"train": 1e9 * width},
        params={"non_embedding": 10 * width, "embedding": 5},
    )


_HEARTBEATS = sa.table("trial_heartbeats", sa.column("trial_id", sa.Integer), sa.column("heartbeat", sa.DateTime))


def backdate_heartbeat(storage: optuna.storages.BaseStorage, trial_id: int, seconds: float = 600.0) -> None:
    """Make the attempt's last heartbeat `seconds` old, as if its worker went quiet then: in
    Optuna's heartbeat table (its time is the database's, SQLite or PostgreSQL), or the ledger's
    timestamp attr on a storage without Optuna's heartbeat."""
    if not optuna_adapter.has_heartbeat(storage):
        storage.set_trial_system_attr(trial_id, "heartbeat_at", time.time() - seconds)
        return
    assert isinstance(storage, optuna.storages.RDBStorage)
    with storage.engine.begin() as connection:
        # Naive, as Optuna compares them (PostgreSQL's now() carries the session's time zone).
        now = connection.execute(sa.select(sa.func.now())).scalar_one().replace(tzinfo=None)
        changed = connection.execute(
            sa.update(_HEARTBEATS)
            .where(_HEARTBEATS.c.trial_id == trial_id)
            .values(heartbeat=now - datetime.timedelta(seconds=seconds))
        )
        assert changed.rowcount == 1, f"trial {trial_id} has no heartbeat row"


def empty_database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of an existing database without any table: an SQLite file, or a new database on
    the PostgreSQL server."""
    if kind == "sqlite":
        path = tmp_path / "empty.db"
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.begin() as connection:  # a valid SQLite file (header written), no tables
            connection.exec_driver_sql("PRAGMA user_version = 1")
        engine.dispose()
        return f"sqlite:///{path}"
    server = str(request.getfixturevalue("postgres_url"))
    name = f"empty_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def table_names(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()
