"""A real single-node Slurm on localhost, for development and the `slurm` tests.

    python -m slurm.devcluster install | up | down | status      (or `gr-scaling slurm ...`)

Debian's packages start no services here (no systemd, policy-rc.d), so this module starts the
daemons itself, in dependency order: munged, MariaDB, slurmdbd (so `sacct` works: without it
submitit never sees a cancelled job end), slurmctld, slurmd. Everything is idempotent: `up` leaves
running daemons alone and only checks they are ready; `down` on a stopped cluster does nothing.
Every wait is bounded, and a daemon that does not come up raises `ClusterError` naming it, its
log file and the log's last lines. Daemons are ended by the pid in their pid file, checked
against /proc/PID/comm, never by name. Needs root (the daemons run as root, munged as munge).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from slurm.daemons import (
    SEARCH_PATH,
    ClusterError,
    Daemon,
    failure,
    launch,
    live,
    run,
    running_pid,
    succeeds,
    tool,
    wait_exit,
    wait_ready,
)
from slurm.devconf import (
    MARKER,
    SLURMDBD_PORT,
    Layout,
    NodeHardware,
    database_setup_sql,
    slurm_conf,
    slurmdbd_conf,
    storage_pass_of,
)

log = logging.getLogger(__name__)

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server")
# One program per package, to tell which packages are missing.
_PROGRAM_OF_PACKAGE = {
    "munge": "munged",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "slurm-client": "sbatch",
    "slurmdbd": "slurmdbd",
    "mariadb-server": "mariadbd",
}
LAYOUT = Layout()
WAIT_S = 60.0


DAEMONS = {
    "munged": Daemon(name="munged", pid_file=Path("/run/munge/munged.pid"), log_file=Path("/var/log/munge/munged.log")),
    "mariadbd": Daemon(name="mariadbd", pid_file=Path("/run/mysqld/mysqld.pid"), log_file=Path("/var/log/mysql/error.log")),
    **{
        name: Daemon(name=name, pid_file=LAYOUT.pid_file(name), log_file=LAYOUT.log_file(name))
        for name in ("slurmdbd", "slurmctld", "slurmd")
    },
}
ORDER = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")  # each needs the ones before it


def _ensure_dir(path: Path, owner: str, mode: int = 0o755) -> None:
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, owner, owner)
    path.chmod(mode)


# ---- configuration -------------------------------------------------------------------------
def node_name() -> str:
    return socket.gethostname().split(".")[0]


def _write_ours(path: Path, text: str, *, mode: int, users: Sequence[str]) -> None:
    """Write a config file this module owns; never overwrite someone else's (a real cluster's)."""
    if path.exists():
        current = path.read_text()
        if not current.startswith(MARKER):
            raise ClusterError(
                f"refusing to overwrite {path}: it was not written by slurm/devcluster.py (a real "
                "cluster's config?); move it away to run the development cluster on this machine"
            )
        if current == text:
            path.chmod(mode)
            return
        running = [name for name in users if running_pid(DAEMONS[name]) is not None]
        if running:
            raise ClusterError(
                f"{path} is out of date while {', '.join(running)} run(s) with the old one; restart the "
                "cluster: python -m slurm.devcluster down && python -m slurm.devcluster up"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # Created with its final mode: slurmdbd.conf holds a password and is never world-readable.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
        f.write(text)
    tmp.chmod(mode)  # the umask may have narrowed it
    os.replace(tmp, path)


def _write_configs(node: str) -> str:
    """Write slurm.conf (node hardware from `slurmd -C`) and slurmdbd.conf; return the DB password."""
    probe = run(["slurmd", "-C"])
    if probe.returncode != 0:
        raise ClusterError(f"`slurmd -C` failed ({probe.returncode}): {probe.stderr.strip()}")
    hardware = NodeHardware.from_slurmd_c(probe.stdout)
    old = LAYOUT.slurmdbd_conf.read_text() if LAYOUT.slurmdbd_conf.exists() else ""
    storage_pass = (storage_pass_of(old) if old.startswith(MARKER) else None) or secrets.token_hex(16)
    _write_ours(LAYOUT.slurm_conf, slurm_conf(node, hardware, LAYOUT), mode=0o644, users=("slurmctld", "slurmd"))
    _write_ours(LAYOUT.slurmdbd_conf, slurmdbd_conf(storage_pass, LAYOUT), mode=0o600, users=("slurmdbd",))
    return storage_pass


# ---- start ---------------------------------------------------------------------------------
def _munge_works() -> bool:
    cred = run(["munge", "-n"], timeout_s=10)
    return cred.returncode == 0 and succeeds(["unmunge"], input=cred.stdout)


def _start_munged(daemon: Daemon) -> None:
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        proc = run(["mungekey", "--create"])
        if proc.returncode != 0:
            raise failure(daemon, f"has no key and `mungekey --create` failed: {proc.stderr.strip()}")
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    for directory in (daemon.pid_file.parent, Path("/var/lib/munge")):
        _ensure_dir(directory, "munge")
    _ensure_dir(daemon.log_file.parent, "munge", 0o700)
    launch(daemon, ["munged", f"--pid-file={daemon.pid_file}", f"--log-file={daemon.log_file}"], user="munge")


def _start_mariadbd(daemon: Daemon) -> None:
    if not Path("/var/lib/mysql/mysql").is_dir():
        proc = run(["mariadb-install-db", "--user=mysql"], timeout_s=120)
        if proc.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    _ensure_dir(daemon.pid_file.parent, "mysql")
    _ensure_dir(daemon.log_file.parent, "mysql", 0o750)
    # mariadbd stays in the foreground; setsid -f detaches it from this process and its session.
    launch(
        daemon,
        ["setsid", "-f", tool("mariadbd"), "--user=mysql", f"--pid-file={daemon.pid_file}", f"--log-error={daemon.log_file}"],
    )


def _setup_database(storage_pass: str) -> None:
    proc = run(["mariadb", "-e", database_setup_sql(storage_pass)])
    if proc.returncode != 0:
        raise failure(DAEMONS["mariadbd"], f"refused the accounting database setup: {proc.stderr.strip()}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _node_state(node: str) -> str:
    proc = run(["sinfo", "-h", "-n", node, "-o", "%T"], timeout_s=10)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _node_ready(node: str) -> bool:
    state = _node_state(node)
    if state.startswith(("drain", "down")) and not state.endswith("*"):  # "*": not responding yet
        log.info("node %s is %s; resuming it", node, state)
        run(["scontrol", "update", f"NodeName={node}", "State=RESUME"])
        return False
    return state.rstrip("*~#") in ("idle", "mixed", "allocated", "completing")


def up(*, timeout_s: float = WAIT_S) -> list[str]:
    """Start every daemon that is not running and wait until each is ready.

    Returns the daemons this call started (in start order), so a caller can stop only those.
    """
    started_at = time.monotonic()
    if os.geteuid() != 0:
        raise ClusterError("the development cluster needs root (its daemons run as root and munge)")
    missing = missing_packages()
    if missing:
        raise ClusterError(f"Slurm packages missing: {', '.join(missing)}; run: python -m slurm.devcluster install")
    node = node_name()
    storage_pass = _write_configs(node)
    for directory in (LAYOUT.log_dir, LAYOUT.state_dir / "slurmctld", LAYOUT.state_dir / "slurmd"):
        directory.mkdir(parents=True, exist_ok=True)

    started: list[str] = []
    try:
        for name, start, ready, what in _start_steps(node, storage_pass):
            daemon = DAEMONS[name]
            if running_pid(daemon) is None:
                start()
                started.append(name)
            wait_ready(daemon, ready, what, timeout_s)
    except BaseException:
        # Leave the machine as this call found it: stop what it started before the failure.
        try:
            down(started)
        except Exception as exc:  # the original error matters more
            log.warning("could not stop %s after the failed start: %s", ", ".join(started), exc)
        raise
    log.debug("development cluster up in %.1f s (started: %s)", time.monotonic() - started_at, ", ".join(started) or "none")
    return started


StartStep = tuple[str, Callable[[], None], Callable[[], bool], str]  # daemon, start, ready?, what ready means


def _start_steps(node: str, storage_pass: str) -> list[StartStep]:
    def start_slurmdbd() -> None:
        _setup_database(storage_pass)
        launch(DAEMONS["slurmdbd"], ["slurmdbd"])

    return [
        ("munged", lambda: _start_munged(DAEMONS["munged"]), _munge_works, "decodes `munge -n`"),
        (
            "mariadbd", lambda: _start_mariadbd(DAEMONS["mariadbd"]),
            lambda: succeeds(["mariadb-admin", "ping"]), "answers `mariadb-admin ping`",
        ),
        ("slurmdbd", start_slurmdbd, lambda: _port_open(SLURMDBD_PORT), f"accepts connections on port {SLURMDBD_PORT}"),
        (
            "slurmctld", lambda: launch(DAEMONS["slurmctld"], ["slurmctld"]),
            lambda: succeeds(["scontrol", "ping"], contains="is UP"), "says UP to `scontrol ping`",
        ),
        (
            "slurmd", lambda: launch(DAEMONS["slurmd"], ["slurmd", "-N", node]),
            lambda: _node_ready(node), f"has node {node} idle in `sinfo`",
        ),
    ]


# ---- stop ----------------------------------------------------------------------------------
def _cancel_all_jobs(timeout_s: float) -> None:
    """Cancel every job and wait until the queue is empty (`scontrol shutdown` leaves jobs running)."""
    queue = run(["squeue", "-h", "-o", "%F"])
    ids = sorted(set(queue.stdout.split()))
    if not ids:
        return
    log.info("cancelling %d job(s): %s", len(ids), " ".join(ids))
    run(["scancel", *ids])
    deadline = time.monotonic() + timeout_s
    while run(["squeue", "-h", "-o", "%i"]).stdout.strip():
        if time.monotonic() > deadline:
            log.warning("jobs still queued %.0f s after scancel; stopping the daemons anyway", timeout_s)
            return
        time.sleep(0.5)


def down(only: Iterable[str] | None = None, *, timeout_s: float = 30.0) -> list[str]:
    """Stop the cluster's daemons (all, or only those named), after cancelling every job.

    Returns the daemons that were running and are now stopped.
    """
    wanted = set(ORDER if only is None else only)
    unknown = wanted - set(ORDER)
    if unknown:
        raise ValueError(f"unknown daemon(s) {sorted(unknown)}; the cluster's daemons are {list(ORDER)}")
    pids = {name: running_pid(DAEMONS[name]) for name in ORDER if name in wanted}
    asked: set[str] = set()
    if pids.get("slurmctld") is not None:
        _cancel_all_jobs(timeout_s)
        # `scontrol shutdown` stops slurmctld and every slurmd; "shutdown slurmctld" only the former.
        target = [] if "slurmd" in wanted else ["slurmctld"]
        if run(["scontrol", "shutdown", *target]).returncode == 0:
            asked.update(("slurmctld", "slurmd") if not target else ("slurmctld",))
    stopped = []
    for name in reversed(ORDER):
        if name not in wanted:
            continue
        daemon, pid = DAEMONS[name], pids[name]
        if pid is None:
            daemon.pid_file.unlink(missing_ok=True)  # stale, or never written
            continue
        if name == "mariadbd" and succeeds(["mariadb-admin", "shutdown"]):
            asked.add(name)  # the clean way; SIGTERM below only if it failed
        if name not in asked and live(pid, name):
            os.kill(pid, signal.SIGTERM)
        wait_exit(daemon, pid, timeout_s)
        stopped.append(name)
        log.info("stopped %s (pid %d)", name, pid)
    return stopped


# ---- status and install --------------------------------------------------------------------
def status() -> dict[str, int | None]:
    """Each daemon's pid, or None when it is not running."""
    return {name: running_pid(DAEMONS[name]) for name in ORDER}


def stray_job_steps() -> list[int]:
    """Running slurmstepd processes (job steps); after `down` there should be none."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and live(int(proc.name), "slurmstepd"):
            pids.append(int(proc.name))
    return pids


def format_status() -> str:
    pids = status()
    lines = [f"{name:10s} " + (f"running (pid {pid})" if pid else "stopped") for name, pid in pids.items()]
    if pids["slurmctld"]:
        nodes = run(["sinfo", "-h", "-o", "%P %D %T"], timeout_s=10).stdout.strip()
        jobs = run(["squeue", "-h", "-o", "%i"], timeout_s=10).stdout.split()
        lines.append(f"partition/nodes/state: {nodes or '?'}; jobs queued or running: {len(jobs)}")
    steps = stray_job_steps()
    if steps and not pids["slurmd"]:
        lines.append(f"job steps left running without slurmd: pids {steps}")
    return "\n".join(lines)


def missing_packages() -> list[str]:
    return [pkg for pkg, program in _PROGRAM_OF_PACKAGE.items() if shutil.which(program, path=SEARCH_PATH) is None]


def install() -> list[str]:
    """apt-get install the packages that are missing; returns what was missing."""
    missing = missing_packages()
    if not missing:
        return []
    apt = shutil.which("apt-get", path=SEARCH_PATH)
    command = "apt-get install -y --no-install-recommends " + " ".join(PACKAGES)
    if apt is None or os.geteuid() != 0:
        raise ClusterError(f"Slurm packages missing ({', '.join(missing)}); as root on Debian/Ubuntu: {command}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            raise ClusterError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    log.info("installed %s", " ".join(PACKAGES))
    return missing


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurm.devcluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("install", "up", "down", "status"))
    parser.add_argument(
        "--best-effort", action="store_true",
        help="install: warn instead of failing when the packages cannot be installed (unless CI=true)",
    )
    args = parser.parse_args(argv)
    return run_action(args.action, best_effort=args.best_effort)


def run_action(action: str, *, best_effort: bool = False) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    try:
        if action == "install":
            missing = install()
            print(f"installed {' '.join(PACKAGES)}" if missing else "Slurm packages already installed")
        elif action == "up":
            newly = up()
            print(f"development cluster up ({time.monotonic() - started:.1f} s; started: {', '.join(newly) or 'none'})")
        elif action == "down":
            stopped = down()
            print(f"development cluster down ({time.monotonic() - started:.1f} s; stopped: {', '.join(stopped) or 'none'})")
        else:
            print(format_status())
            return 0 if all(status().values()) else 3
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        if action == "install" and best_effort and not in_ci():
            print(f"warning: {exc}; the `slurm` tests will be skipped", file=sys.stderr)
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
