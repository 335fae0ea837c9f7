"""How `make test` spreads the suite over pytest-xdist workers: every test on its own, except the
`slurm` tests, which all run on one worker. They share the one development cluster, which one of
them stops and restarts (tests/integration/test_slurm.py) and the worker that started it stops at
its end.

The controller that schedules sees node ids only (the workers collect), so the `slurm` tests are
known by their modules, `tests/integration/test_slurm*.py`; tests/unit/test_xdist_groups.py checks
that every test marked `slurm` is in one, and the scheduling on a live run. (xdist's own
`--dist loadgroup` does not group under pytest 9: it renames `item._nodeid`, which pytest 9 no
longer reads.) Imported by tests/conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest

SLURM_GROUP = "slurm"
SLURM_MODULES = "tests/integration/test_slurm"  # the node ids of the `slurm` tests start so


def work_unit(nodeid: str) -> str:
    """The scheduling unit of a test: the slurm group, or the test itself."""
    return SLURM_GROUP if nodeid.startswith(SLURM_MODULES) else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "load":
        return None  # a --dist asked for explicitly
    from xdist.scheduler import LoadScopeScheduling

    class SlurmOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return SlurmOnOneWorker(config, log)
