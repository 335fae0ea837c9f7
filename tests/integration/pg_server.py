"""A throwaway PostgreSQL server for the ledger tests, and the session fixture `postgres_url` that
starts it (made visible to every test by tests/conftest.py).

initdb and postgres refuse to run as root: as root they run as the `postgres` system user (made by
Debian's package) in a directory it owns. The server listens on 127.0.0.1 at a free port with
trust authentication and durability off (fsync, synchronous commit): a test database.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "postgresql"
DATABASE = "ledger"
ROLE = "gr"


class ServerError(RuntimeError):
    pass


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def _install() -> None:
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise ServerError(f"PostgreSQL is not installed; as root on Debian/Ubuntu: apt-get install -y {PACKAGE}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "--no-install-recommends", PACKAGE]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            raise ServerError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Server:
    bindir: Path
    root: Path
    port: int
    user: str | None  # the system user the server runs as (None: this process's)

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def run(self, program: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / program), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if proc.returncode != 0:
            raise ServerError(f"{program} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-1500:]}")
        return proc

    def stop(self) -> None:
        try:
            self.run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _installed_bindir() -> Path:
    """The server binaries' directory, installing the package first when they are missing. The
    pytest-xdist workers (`make test`) each start a server at once: they install one at a time, as
    a second apt-get would fail on dpkg's lock."""
    bindir = _bindir()
    if bindir is not None:
        return bindir
    with open(Path(tempfile.gettempdir()) / "gr-scaling-postgresql-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        bindir = _bindir()
        if bindir is None:
            _install()
            bindir = _bindir()
    if bindir is None:
        raise ServerError(f"installed {PACKAGE} but found no /usr/lib/postgresql/*/bin/initdb")
    return bindir


def start() -> Server:
    bindir = _installed_bindir()
    root = Path(tempfile.mkdtemp(prefix="gr-ledger-pg-"))
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = Server(bindir=bindir, root=root, port=_free_port(), user=user)
    data = root / "data"
    server.run("initdb", "-D", str(data), "-U", ROLE, "-A", "trust", "--no-sync", "-E", "UTF8")
    server.run("pg_ctl", "-D", str(data), "-w", "-l", str(root / "server.log"), "-o",
               f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200", "start")
    server.run("createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", ROLE, DATABASE)
    return server


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth), as an SQLAlchemy URL of its
    database "ledger"; stopped and deleted at the end of the session.

    Uses the server binaries under /usr/lib/postgresql/*/bin, apt-getting the `postgresql` package
    first when they are missing and this is root. Outside CI a machine without them skips the
    tests that need it; in CI (CI=true) that is a failure.
    """
    try:
        server = start()
    except (ServerError, OSError, subprocess.SubprocessError) as exc:
        if in_ci():
            pytest.fail(f"CI=true and no PostgreSQL server could be started for the ledger tests: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL server for the ledger tests: {exc}")
    try:
        yield server.url
    finally:
        server.stop()
