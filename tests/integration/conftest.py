from __future__ import annotations

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
