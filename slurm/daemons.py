"""Daemons as the development cluster sees them: pid files checked against /proc, bounded waits.

A daemon counts as running only when the pid in its pid file is a live (not zombie) process
whose /proc/PID/comm is the daemon's name: a stale pid file, or one whose pid now belongs to
another program, never leads to signalling the wrong process. Failures name the daemon, its log
file and the log's last lines.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# Daemons live in sbin, which a non-login PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
START_GRACE_S = 10.0  # a started daemon must show a live pid by then


class ClusterError(RuntimeError):
    """The development cluster could not be installed, started or stopped; the message says why."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Daemon:
    name: str  # also its /proc/PID/comm
    pid_file: Path
    log_file: Path


def tool(name: str) -> str:
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        raise ClusterError(f"{name} not found; install the Slurm packages: python -m slurm.devcluster install")
    return path


def run(argv: Sequence[str], *, timeout_s: float = 30.0, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout_s, **kwargs)


def live(pid: int, comm: str) -> bool:
    """Whether `pid` is a running (not zombie) process named `comm` (/proc truncates to 15 chars)."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != comm[:15]:
            return False
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # nothing reaps orphans here, so stopped daemons linger as zombies


def running_pid(daemon: Daemon) -> int | None:
    """The daemon's pid from its pid file, if that process is alive and is this daemon."""
    try:
        pid = int(daemon.pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if live(pid, daemon.name) else None


def log_tail(path: Path, lines: int = 12) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"\n  (log unreadable: {exc})"
    return "".join(f"\n  | {line}" for line in tail) if tail else "\n  (log is empty)"


def failure(daemon: Daemon, problem: str) -> ClusterError:
    return ClusterError(f"{daemon.name} {problem}; see {daemon.log_file}, last lines:{log_tail(daemon.log_file)}")


def launch(daemon: Daemon, argv: Sequence[str], *, user: str | None = None) -> None:
    """Run a daemon's start command (it forks into the background) and check that it exited 0."""
    argv = [tool(argv[0]), *argv[1:]]
    as_user = {"user": user, "group": user, "extra_groups": []} if user else {}
    # Output to a file, not a pipe: the forked daemon may keep the descriptor open forever.
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=30, **as_user)
        except subprocess.TimeoutExpired:
            raise failure(daemon, f"start command {' '.join(argv)} did not return within 30 s") from None
        out.seek(0)
        text = out.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise failure(daemon, f"did not start: `{' '.join(argv)}` exited with {proc.returncode}: {text}")
    log.info("started %s", daemon.name)


def wait_ready(daemon: Daemon, ready: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll `ready()` until true; fail at the deadline, or early once the daemon is seen dead."""
    started = time.monotonic()
    seen_alive = False
    while not ready():
        alive = running_pid(daemon) is not None
        waited = time.monotonic() - started
        # A daemon that dies on start (port taken, bad config) never writes or soon leaves its pid file.
        if not alive and (seen_alive or waited > START_GRACE_S):
            raise failure(daemon, f"is not running (waited {waited:.0f} s until it {what})")
        seen_alive = seen_alive or alive
        if waited > timeout_s:
            raise failure(daemon, f"did not get ready ({what}) within {timeout_s:.0f} s")
        time.sleep(0.2)


def succeeds(argv: Sequence[str], *, contains: str = "", **kwargs) -> bool:
    try:
        proc = run(argv, timeout_s=10, **kwargs)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and contains in proc.stdout


def wait_exit(daemon: Daemon, pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while live(pid, daemon.name):
        if time.monotonic() > deadline:
            log.warning("%s (pid %d) still running %.0f s after it was asked to stop; killing it", daemon.name, pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)
            if live(pid, daemon.name):
                raise failure(daemon, f"(pid {pid}) survived SIGKILL")
            return
        time.sleep(0.2)
