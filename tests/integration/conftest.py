from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """The development Slurm cluster (slurm/devcluster.py), started for this session if needed.

    Outside CI, a machine that cannot run it (not root, packages missing) skips the `slurm`
    tests with the reason; in CI (CI=true) that is a failure. The daemons this session started
    are stopped at its end; a cluster that was already up is left up.
    """
    from slurm import devcluster

    try:
        started = devcluster.up()
    except (devcluster.ClusterError, OSError, subprocess.SubprocessError) as exc:
        if devcluster.in_ci():
            pytest.fail(f"CI=true and the development Slurm cluster did not start: {exc}", pytrace=False)
        pytest.skip(f"no local Slurm cluster (slurm/devcluster.py could not start one): {exc}")
    yield
    devcluster.down(started)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth), as an SQLAlchemy URL of its
    database "ledger"; stopped and deleted at the end of the session.

    Uses the server binaries under /usr/lib/postgresql/*/bin, apt-getting the `postgresql` package
    first when they are missing and this is root. Outside CI a machine without them skips the
    tests that need it; in CI (CI=true) that is a failure.
    """
    import pg_server as postgres  # tests/integration/pg_server.py

    try:
        server = postgres.start()
    except (postgres.ServerError, OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and no PostgreSQL server could be started for the ledger tests: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL server for the ledger tests: {exc}")
    try:
        yield server.url
    finally:
        server.stop()
