"""`make test`'s pytest-xdist scheduling (tests/xdist_groups.py): the `slurm` tests on one worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from xdist_groups import SLURM_GROUP, SLURM_MODULES, work_unit

ROOT = Path(__file__).resolve().parents[2]


def test_every_slurm_test_is_where_the_scheduler_looks_for_it() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slurm", "-p", "no:xdist",
                           "-p", "no:cacheprovider", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CI": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    slurm_tests = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(slurm_tests) >= 10
    assert [t for t in slurm_tests if work_unit(t) != SLURM_GROUP] == []
    assert work_unit("tests/unit/test_ledger.py::test_x") == "tests/unit/test_ledger.py::test_x"


def test_slurm_modules_run_on_one_worker_and_the_rest_spread(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from xdist_groups import pytest_xdist_make_scheduler  # noqa: F401\n")
    # Two slurm modules and two others, run in that order: without the grouping the first
    # worker to finish takes the next test, whatever its module.
    modules = Path(tmp_path, *SLURM_MODULES.split("/")[:-1])
    modules.mkdir(parents=True)
    prefix = SLURM_MODULES.split("/")[-1]
    names = [f"{prefix}.py", f"{prefix}_training.py", "test_other.py", "test_zz.py"]
    for name in names:
        tests = [f"def test_{i}():\n    _record({name!r}, {i})\n" for i in range(4)]
        (modules / name).write_text(
            "import os, time\n\n\ndef _record(module, i):\n"
            "    with open(os.path.join(os.environ['OUT'], f'{module}-{i}'), 'w') as f:\n"
            "        f.write(os.environ['PYTEST_XDIST_WORKER'])\n    time.sleep(0.2)\n\n\n" + "\n\n".join(tests))
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "tests"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"OUT": str(out), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert done.returncode == 0, done.stdout + done.stderr
    workers = {path.name: path.read_text() for path in out.iterdir()}
    assert len(workers) == 16
    assert len({w for name, w in workers.items() if name.startswith(prefix)}) == 1
    assert len(set(workers.values())) == 2  # the other tests still use both workers
