"""One driver per sweep directory: an advisory lock that a dead driver does not hold.

The driver (`sweep launch` / `resume`, foreground or `--detach`) holds an exclusive `flock` on
`<sweep dir>/driver.lock` for its whole life and writes its host, pid and start time into it. The
kernel drops the lock when the process dies, however it dies (SIGKILL included), so a crashed
driver never blocks the next launch, and a second driver started while one lives is refused with
the live one's pid and host. The file's content outlives the driver: `sweep status` and
`sweep cancel` tell a live driver (the lock is held) from a dead one (a stale file).

A driver that ends (normally or by an exception) empties the file; one that is killed leaves its
record behind, which `read_driver` reports as a dead driver.

`flock` locks are per host on NFS setups without lock forwarding: launch a sweep's drivers from
one login node (the workers may run anywhere).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

from sweeps.layout import SweepLayout


class SweepBusy(ValueError):
    """Another live driver holds the sweep directory (a user error: one line, exit 2)."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class DriverInfo:
    host: str
    pid: int
    started: float  # time.time() when it took the lock
    alive: bool  # the lock is held now (always False for a driver on another host we cannot see)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        state = "running" if self.alive else "not running: it died without finishing (stale lock file)"
        return f"driver pid {self.pid} on {self.host}, started {since}: {state}"


def _parse(text: str) -> tuple[str, int, float] | None:
    try:
        host, pid, started = text.split()
        return host, int(pid), float(started)
    except ValueError:
        return None


def read_driver(sweep_dir: str | Path) -> DriverInfo | None:
    """Who drove (or drives) this sweep, and whether it is alive; None if no driver ever ran.

    Read-only: opens the lock file for reading and probes the lock with a shared, non-blocking
    request that is released at once.
    """
    path = SweepLayout(Path(sweep_dir)).driver_lock
    try:
        handle = open(path)
    except FileNotFoundError:
        return None
    with handle:
        parsed = _parse(handle.read())
        if parsed is None:
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            alive = True
        else:
            fcntl.flock(handle, fcntl.LOCK_UN)
            alive = False
    host, pid, started = parsed
    return DriverInfo(host=host, pid=pid, started=started, alive=alive)


class DriverLock:
    """Context manager: hold the sweep directory's driver lock, or raise SweepBusy at once."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.path = SweepLayout(Path(sweep_dir)).driver_lock
        self._handle: IO[str] | None = None

    def __enter__(self) -> DriverLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            parsed = _parse(handle.read())
            handle.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = f"pid {parsed[1]} on {parsed[0]}" if parsed else "another process"
            raise SweepBusy(
                f"{self.path.parent} is already being driven by {holder}; wait for it to finish, follow it with "
                f"`gr-scaling sweep status {self.path.parent}`, or stop it with `gr-scaling sweep cancel "
                f"{self.path.parent}`"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{socket.gethostname()} {os.getpid()} {time.time():.3f}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()  # a driver that ended leaves no stale record behind
            self._handle.flush()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


__all__ = ["DriverInfo", "DriverLock", "SweepBusy", "read_driver"]
