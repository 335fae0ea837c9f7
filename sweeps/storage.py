"""Opening a ledger's Optuna storage, and the heartbeats that show a worker is alive.

URLs: an SQLite file (the default, in the sweep directory, put in WAL mode), "journal:PATH"
(Optuna's JournalFileBackend, for shared filesystems such as NFS), or any other RDB URL Optuna
accepts (PostgreSQL for many nodes). RDB storages use Optuna's own heartbeat; storages without one
(the journal) get a timestamp system attr that the ledger checks the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_GRACE_S = 60

JOURNAL_PREFIX = "journal:"


def storage_url_for(sweep_dir: str | Path, configured: str | None = None) -> str:
    """The ledger URL of a sweep: `configured` (spec [ledger] url) or an SQLite file in the sweep dir.

    A relative "journal:PATH" is made absolute against the sweep directory, so that jobs started
    elsewhere find the same file.
    """
    if configured is None:
        return f"sqlite:///{Path(sweep_dir).resolve() / 'ledger.db'}"
    if configured.startswith(JOURNAL_PREFIX):
        path = Path(configured.removeprefix(JOURNAL_PREFIX))
        return JOURNAL_PREFIX + str(path if path.is_absolute() else (Path(sweep_dir) / path).resolve())
    return configured


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for a ledger URL: "journal:PATH" (JournalFileBackend) or any RDB URL."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix(JOURNAL_PREFIX))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if not url.startswith("sqlite:///"):
        return _server_storage(url)
    path = Path(url.removeprefix("sqlite:///"))
    # Creating the schema is not safe to race: two processes opening a new file at once (a driver
    # registering runs while `sweep status` polls it) both insert Optuna's schema version and one
    # fails. An advisory lock beside the file serializes the opening; afterwards it is free.
    with _exclusive_lock(path.with_name(path.name + ".open-lock")):
        _use_wal(path)
        # Writers from several worker processes wait for the lock instead of failing at once.
        return _rdb_storage(url, {"connect_args": {"timeout": 60}})


def _server_storage(url: str) -> optuna.storages.RDBStorage:
    """A ledger on a database server (PostgreSQL, MySQL): a failure to reach it is the setting's."""
    import sqlalchemy.exc

    # pool_pre_ping: a long sweep outlives server-side idle timeouts of pooled connections.
    try:
        return _rdb_storage(url, {"pool_pre_ping": True})
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError, ModuleNotFoundError) as exc:
        shown = _without_password(url)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ValueError(
            f"[ledger] url = {shown!r}: cannot connect to the ledger database ({reason}); check the host, "
            "port, user and database name, that the server is running and the database exists "
            "(e.g. `createdb <name>`), or leave [ledger] url unset for an SQLite file in the sweep directory"
        ) from exc


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


def _rdb_storage(url: str, engine_kwargs: dict) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        grace_period=HEARTBEAT_GRACE_S,
    )


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _use_wal(path: Path) -> None:
    """Put an SQLite ledger in write-ahead-log mode (a persistent property of the file).

    Each trial Optuna writes is one transaction; with the default rollback journal every commit
    rewrites and syncs the journal (about 25 ms here), with WAL it appends (about 9 ms), which is
    what makes registering a 10,000-run sweep bearable. WAL commits survive a killed process.
    WAL needs shared memory between the processes, so not on NFS: use "journal:PATH" there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def has_optuna_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    return isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None


def record_heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """Optuna's heartbeat where the storage has one (RDB); else a timestamp system attr (journal)."""
    if has_optuna_heartbeat(storage):
        storage.record_heartbeat(trial_id)
    else:
        storage.set_trial_system_attr(trial_id, "heartbeat_at", time.time())


def stale_heartbeats(
    storage: optuna.storages.BaseStorage, study_id: int, running: Iterable[FrozenTrial]
) -> dict[int, str]:
    """The running trials (of `running`, all in study `study_id`) whose last heartbeat is older
    than HEARTBEAT_GRACE_S, each with how long it has been quiet. Nothing is failed here.

    With Optuna's heartbeat this reads its heartbeat table the way `optuna.storages.fail_stale_trials`
    does, but leaves the decision to the caller: a quiet attempt's Slurm job may be requeued and
    waiting in the queue, to take the attempt back when it starts again.
    """
    if has_optuna_heartbeat(storage):
        # The one query BaseHeartbeat exposes for this (fail_stale_trials uses it too).
        stale = storage._get_stale_trial_ids(study_id)  # type: ignore[attr-defined]
        return {trial_id: f"no heartbeat for more than {HEARTBEAT_GRACE_S} s" for trial_id in stale}
    now, quiet = time.time(), {}
    for trial in running:
        beat = trial.system_attrs.get("heartbeat_at")
        if beat is not None and now - beat > HEARTBEAT_GRACE_S:
            quiet[trial._trial_id] = f"no heartbeat for {now - beat:.0f} s"
    return quiet


class Heartbeat:
    """Records Optuna heartbeats for a running attempt from a daemon thread (context manager)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                record_heartbeat(self._storage, self._trial_id)
            except Exception:  # a missed beat is harmless; the next one retries
                log.warning("heartbeat for trial %d failed", self._trial_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
