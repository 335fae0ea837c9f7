"""Opening a ledger's Optuna storage, and the heartbeats that show a worker is alive.

URLs: an SQLite file (the default, in the sweep directory, put in WAL mode), "journal:PATH"
(Optuna's JournalFileBackend, for shared filesystems such as NFS), or any other RDB URL Optuna
accepts (PostgreSQL for many nodes). RDB storages use Optuna's own heartbeat; storages without one
(the journal) get a timestamp system attr that the ledger checks the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from sweeps import optuna_adapter

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_GRACE_S = 60

JOURNAL_PREFIX = "journal:"
REBUILD_HINT = "gr-scaling sweep rebuild-ledger"
# How long a read-only open waits for another process to finish creating an SQLite ledger.
CREATION_WAIT_S = 120.0


class LedgerUnavailable(ValueError):
    """A ledger that should exist is missing, empty or unreadable (a user error, with the way out)."""


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


def ledger_file(url: str) -> Path | None:
    """The file of a file-backed ledger URL (SQLite, journal), else None (a database server)."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url.removeprefix(JOURNAL_PREFIX))
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def _require_directory(path: Path) -> None:
    # A ledger URL naming a directory that does not exist is a typo, not a request to create a
    # tree (a leading "/" too many would mkdir at the filesystem root).
    if not path.parent.is_dir():
        raise ValueError(f"[ledger] url: the directory {path.parent} of the ledger file {path.name} does not exist; "
                         "create it first or fix the path (leave [ledger] url unset for ledger.db in the sweep directory)")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for a ledger URL: "journal:PATH" (JournalFileBackend) or any RDB URL.

    Creates the ledger (file and schema) when it does not exist; its directory must exist.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    path = ledger_file(url)
    if path is not None:
        _require_directory(path)
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return _damage_reported(lambda: JournalStorage(JournalFileBackend(str(path))), path)
    if path is None:
        return _server_storage(url)
    # Creating the schema is not safe to race: two processes opening a new file at once (a driver
    # registering runs while `sweep status` polls it) both insert Optuna's schema version and one
    # fails. An advisory lock beside the file serializes the opening; afterwards it is free.
    with _exclusive_lock(_open_lock(path)):
        _damage_reported(lambda: _use_wal(path), path)
        # Writers from several worker processes wait for the lock instead of failing at once.
        return _damage_reported(lambda: _rdb_storage(url, {"connect_args": {"timeout": 60}}), path)


def open_existing_storage(url: str, study_name: str) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
    """Storage and study of a ledger that must already exist; creates and changes nothing.

    A missing, empty or damaged ledger file raises LedgerUnavailable naming the file and the way
    out; so does a ledger that has no study of this sweep.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    path = ledger_file(url)
    if path is not None and not url.startswith(JOURNAL_PREFIX):
        # A driver may be creating this SQLite file right now (open_storage holds the open-lock
        # meanwhile, from before the file exists until its schema is whole): wait for it, or the
        # file looks empty, or Optuna's version bookkeeping gets written here too.
        with _shared_lock_if_present(_open_lock(path), path):
            _require_nonempty(path)
            sqlite_args = {"connect_args": {"timeout": 60}}
            _damage_reported(lambda: _require_ledger_tables(url, sqlite_args, path), path)
            storage: optuna.storages.BaseStorage = _damage_reported(
                lambda: _rdb_storage(url, sqlite_args, create_tables=False), path)
    elif url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        assert path is not None
        _require_nonempty(path)
        storage = _damage_reported(lambda: JournalStorage(JournalFileBackend(str(path))), path)
    else:
        storage = _server_storage(url, existing=True)
    try:
        study = _damage_reported(lambda: optuna.load_study(study_name=study_name, storage=storage), path)
    except KeyError:
        raise LedgerUnavailable(
            f"the ledger {path or url} has no study {study_name!r} (no run of this sweep was ever registered in it)"
            + (f"; rebuild it from the run directories with `{REBUILD_HINT} {path.parent}`" if path else "")
        ) from None
    return storage, study


def _require_nonempty(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        state = "is empty" if path.is_file() else "does not exist"
        raise LedgerUnavailable(
            f"the ledger {path} {state}; nothing was created. If the sweep has finished runs (runs/*/result.json), "
            f"rebuild it from them with `{REBUILD_HINT} {path.parent}`; otherwise launch the sweep first"
        )


def _damage_reported(open_fn, path: Path | None):  # type: ignore[no-untyped-def]
    """Run `open_fn`; a corrupt ledger file becomes LedgerUnavailable naming it and the way out."""
    import sqlalchemy.exc

    try:
        return open_fn()
    except (sqlite3.DatabaseError, sqlalchemy.exc.DatabaseError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if path is None:
            raise
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise LedgerUnavailable(
            f"the ledger {path} is damaged ({reason}); the runs' own files are intact: move it aside and rebuild it "
            f"from runs/ with `{REBUILD_HINT} {path.parent}` (it keeps the damaged file as "
            f"{path.name}.damaged-<time>)"
        ) from exc


def _require_ledger_tables(url: str, engine_kwargs: dict, path: Path | None) -> None:
    """Raise LedgerUnavailable unless the database holds Optuna's whole schema, its version
    bookkeeping included: opening it as an RDBStorage would write what is missing, and an open of
    an existing ledger must write nothing."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        with engine.connect() as connection:
            inspector = sqlalchemy.inspect(connection)
            present = all(inspector.has_table(name) for name in ("studies", "version_info", "alembic_version"))
            present = present and bool(connection.execute(sqlalchemy.text("SELECT COUNT(*) FROM version_info")).scalar())
    finally:
        engine.dispose()
    if present:
        return
    if path is not None:
        raise LedgerUnavailable(
            f"the ledger {path} holds no ledger schema, or an incomplete one (not a ledger file, or its creation was "
            f"interrupted); "
            f"nothing was changed. If the sweep has finished runs, rebuild it from them with `{REBUILD_HINT} {path.parent}`"
        )
    raise LedgerUnavailable(
        f"the database {_without_password(url)} holds no ledger (no Optuna tables); nothing was created. Launch the "
        "sweep first (its driver creates them), or check [ledger] url"
    )


def _server_storage(url: str, *, existing: bool = False) -> optuna.storages.RDBStorage:
    """A ledger on a database server (PostgreSQL, MySQL): a failure to reach it is the setting's.

    existing: the ledger must be there already (LedgerUnavailable otherwise; nothing is created).
    """
    import sqlalchemy.exc

    # pool_pre_ping: a long sweep outlives server-side idle timeouts of pooled connections.
    try:
        if existing:
            _require_ledger_tables(url, {"pool_pre_ping": True}, None)
        return _rdb_storage(url, {"pool_pre_ping": True}, create_tables=not existing)
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


def _rdb_storage(url: str, engine_kwargs: dict, *, create_tables: bool = True) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        grace_period=HEARTBEAT_GRACE_S,
        skip_table_creation=not create_tables,
    )


def _open_lock(ledger_path: Path) -> Path:
    """The advisory lock beside an SQLite ledger that serializes creating its schema."""
    return ledger_path.with_name(ledger_path.name + ".open-lock")


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _shared_lock_if_present(path: Path, ledger: Path):
    """Hold `path` shared while it exists; creates nothing (for read-only opens). Every ledger
    file open_storage creates has its lock file made first, so a missing one means no creation
    by this tool is under way. Creating a schema takes a second or so: a lock held for
    CREATION_WAIT_S (a creator stopped with Ctrl-Z, a hung file system) raises LedgerUnavailable."""
    try:
        handle = open(path)
    except FileNotFoundError:
        yield
        return
    with handle:
        deadline = time.monotonic() + CREATION_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LedgerUnavailable(
                        f"the ledger {ledger} has been being created by another process for over "
                        f"{CREATION_WAIT_S:.0f} s ({path.name} is held); if that process is stopped or gone, "
                        "resume or kill it, then try again"
                    ) from None
                time.sleep(0.05)
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
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def record_heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """Optuna's heartbeat where the storage has one (RDB); else a timestamp system attr (journal)."""
    if optuna_adapter.has_heartbeat(storage):
        optuna_adapter.record_heartbeat(storage, trial_id)
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
    if optuna_adapter.has_heartbeat(storage):
        stale = optuna_adapter.stale_trial_ids(storage, study_id)
        return {trial_id: f"no heartbeat for more than {HEARTBEAT_GRACE_S} s" for trial_id in stale}
    now, quiet = time.time(), {}
    for trial in running:
        beat = trial.system_attrs.get("heartbeat_at")
        if beat is not None and now - beat > HEARTBEAT_GRACE_S:
            quiet[optuna_adapter.trial_id_of(trial)] = f"no heartbeat for {now - beat:.0f} s"
    return quiet


class Heartbeat:
    """Records Optuna heartbeats for a running attempt from a daemon thread (context manager)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        self._storage, self._attempt = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                record_heartbeat(self._storage, self._attempt)
            except Exception:  # a missed beat is harmless; the next one retries
                log.warning("heartbeat for trial %d failed", self._attempt, exc_info=True)

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
