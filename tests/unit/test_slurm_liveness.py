"""Reading Slurm's answer about which jobs are alive (slurm/liveness.py), without a cluster.

The squeue text below is what Slurm 22.05 printed on the development cluster for
`squeue --noheader --array --states=all --format=%i|%T --jobs=...` (a running job, a pending
array, a finished array task, a cancelled job). `squeue` itself is a stand-in script on PATH
that prints such text; the real one is exercised in tests/integration/test_slurm_training.py.
"""

from __future__ import annotations

import logging
import shutil
import stat
from pathlib import Path

import pytest

from slurm.liveness import check_job_ids, is_alive, parse_squeue_states, slurm_jobs_alive

CAT = shutil.which("cat")  # by full path: the tests leave only the stand-in's folder on PATH

SQUEUE_OUTPUT = """79_0|PENDING
79_1|PENDING
80_2|REQUEUE_HOLD
78|RUNNING
80_0|COMPLETED
84|CANCELLED
85_3|SPECIAL_EXIT
"""


def test_squeue_output_is_read_into_states() -> None:
    states = parse_squeue_states(SQUEUE_OUTPUT + "\n")
    assert states == {
        "79_0": "PENDING", "79_1": "PENDING", "80_2": "REQUEUE_HOLD", "78": "RUNNING",
        "80_0": "COMPLETED", "84": "CANCELLED", "85_3": "SPECIAL_EXIT",
    }
    assert {job_id for job_id, state in states.items() if is_alive(state)} == {"79_0", "79_1", "80_2", "78", "85_3"}


@pytest.mark.parametrize(
    ("state", "alive"),
    [
        ("PENDING", True), ("REQUEUED", True), ("REQUEUE_HOLD", True), ("RUNNING", True), ("CONFIGURING", True),
        ("COMPLETING", True), ("SUSPENDED", True), ("RESIZING", True), ("STOPPED", True), ("SIGNALING", True),
        ("COMPLETED", False), ("CANCELLED by 0", False), ("FAILED", False), ("TIMEOUT", False),
        ("NODE_FAIL", False), ("OUT_OF_MEMORY", False), ("PREEMPTED", False), ("BOOT_FAIL", False),
        ("DEADLINE", False), ("cancelled", False),
    ],
)
def test_only_final_states_count_as_ended(state: str, alive: bool) -> None:
    assert is_alive(state) is alive


def test_unreadable_squeue_output_and_bad_job_ids_are_named() -> None:
    with pytest.raises(ValueError, match=r"squeue output line 2 is '79_\[0-2\] PENDING'.*JOBID\|STATE"):
        parse_squeue_states("78|RUNNING\n79_[0-2] PENDING\n")
    with pytest.raises(ValueError, match=r"empty Slurm job state"):
        is_alive("  ")
    with pytest.raises(ValueError, match=r"job_ids \['abc', 7\] are not Slurm job ids.*'123_4'"):
        check_job_ids(["12_3", "abc", 7])  # type: ignore[list-item]
    assert check_job_ids(["12_3", "4", "12_3"]) == ["12_3", "4"]


def _fake_squeue(bin_dir: Path, *, stdout: str = "", stderr: str = "", code: int = 0) -> Path:
    """An executable `squeue` on PATH that records its arguments and answers with canned text."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "out.txt").write_text(stdout)
    (bin_dir / "err.txt").write_text(stderr)
    script = bin_dir / "squeue"
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {bin_dir}/args.txt\n'
        f"{CAT} {bin_dir}/out.txt\n{CAT} {bin_dir}/err.txt >&2\nexit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir / "args.txt"


def test_one_squeue_call_answers_for_every_job_and_unlisted_jobs_have_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _fake_squeue(tmp_path / "bin", stdout=SQUEUE_OUTPUT)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    alive = slurm_jobs_alive(["80_2", "78", "80_0", "79_1", "84", "70_1", "78"])
    assert alive == {"78": True, "79_1": True, "80_2": True, "80_0": False, "84": False, "70_1": False}
    assert args.read_text().splitlines() == [
        "--noheader", "--array", "--states=all", "--format=%i|%T", "--jobs=70_1,78,79_1,80_0,80_2,84",
    ]


def test_when_slurm_cannot_be_asked_every_job_is_unknown_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING, logger="slurm.liveness"):
        assert slurm_jobs_alive(["78"]) == {}
    assert "squeue is not on PATH" in caplog.text

    caplog.clear()
    _fake_squeue(tmp_path / "bin", stderr="slurm_load_jobs error: Unable to contact slurm controller", code=1)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with caplog.at_level(logging.WARNING, logger="slurm.liveness"):
        assert slurm_jobs_alive(["78", "79_1"]) == {}
    assert "exited with 1: slurm_load_jobs error: Unable to contact slurm controller" in caplog.text

    caplog.clear()
    _fake_squeue(tmp_path / "bin", stdout="garbage\n")
    with caplog.at_level(logging.WARNING, logger="slurm.liveness"):
        assert slurm_jobs_alive(["78"]) == {}
    assert "cannot read squeue's answer" in caplog.text


def test_one_job_the_controller_forgot_has_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # squeue fails this way when the only id asked about is unknown (several unknown: no output).
    _fake_squeue(tmp_path / "bin", stderr="slurm_load_jobs error: Invalid job id specified", code=1)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert slurm_jobs_alive(["99999"]) == {"99999": False}
    assert slurm_jobs_alive([]) == {}
