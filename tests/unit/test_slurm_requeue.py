"""The in-job requeue survives the SIGTERM its own success brings (slurm/jobs.py `requeue_job`).

CI failed once in tests/integration/test_slurm.py's preemption test with `Command ['scontrol',
'requeue', '138'] died with <Signals.SIGTERM: 15>`: requeueing has Slurm SIGTERM every process of
the job, and scontrol was still one of them. Here a stand-in `scontrol` on PATH signals itself
as Slurm would, then exits 0, with no cluster.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from submitit.slurm import slurm as submitit_slurm

from slurm import jobs


@pytest.fixture
def scontrol_killed_by_its_requeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    record = tmp_path / "calls.txt"
    stand_in = tmp_path / "scontrol"
    script = ["#!" + shutil.which("bash"), f'echo "$@" >> {record}', "kill -TERM $$", "sleep 0.2", "exit 0"]
    stand_in.write_text("\n".join(script) + "\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(shutil.which('bash')).parent}")
    return record


def test_a_plain_call_dies_with_the_sigterm_of_its_requeue(scontrol_killed_by_its_requeue):
    # What submitit's own requeue did: the defect this module works around.
    with pytest.raises(subprocess.CalledProcessError, match="SIGTERM"):
        subprocess.check_call(["scontrol", "requeue", "138"], timeout=10)


def test_requeue_job_survives_it_and_submitit_requeues_through_it(scontrol_killed_by_its_requeue):
    jobs.requeue_job("138")
    assert submitit_slurm.SlurmJobEnvironment._requeue is jobs._submitit_requeue

    class Env:
        job_id = "139_2"

    jobs._submitit_requeue(Env(), 3)  # type: ignore[arg-type]
    assert scontrol_killed_by_its_requeue.read_text().splitlines() == ["requeue 138", "requeue 139_2"]
