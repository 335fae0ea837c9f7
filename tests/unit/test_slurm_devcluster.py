"""The development cluster's config text and its process handling, without starting Slurm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slurm import daemons, devcluster
from slurm.devconf import MARKER, Layout, NodeHardware, slurm_conf, slurmdbd_conf, storage_pass_of

SLURMD_C = (
    "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105\n"
    "UpTime=0-00:50:39\n"
)


def test_node_hardware_comes_from_slurmd_c() -> None:
    hardware = NodeHardware.from_slurmd_c(SLURMD_C)
    assert (hardware.cpus, hardware.cores_per_socket, hardware.real_memory_mb) == (2, 2, 24105)
    with pytest.raises(ValueError, match="lacks"):
        NodeHardware.from_slurmd_c("NodeName=vm CPUs=2")


def test_slurm_conf_has_the_settings_tests_rely_on() -> None:
    text = slurm_conf("vm", NodeHardware.from_slurmd_c(SLURMD_C), Layout())
    lines = text.splitlines()
    assert lines[0] == MARKER
    for setting in (
        "SlurmctldHost=localhost", "AuthInfo=cred_expire=10", "KillWait=5", "MailProg=/bin/true",
        "SchedulerParameters=bf_interval=5,sched_interval=10", "ProctrackType=proctrack/linuxproc",
        "AccountingStorageType=accounting_storage/slurmdbd", "SlurmctldPidFile=/run/slurmctld.pid",
        "SlurmdLogFile=/var/log/slurm/slurmd.log",
        "NodeName=vm NodeAddr=127.0.0.1 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
        "RealMemory=24105 State=UNKNOWN",
        "PartitionName=dev Nodes=vm Default=YES MaxTime=INFINITE State=UP",
    ):
        assert setting in lines


def test_slurmdbd_conf_keeps_its_password() -> None:
    text = slurmdbd_conf("s3cret", Layout())
    assert "StorageType=accounting_storage/mysql" in text and "PidFile=/run/slurmdbd.pid" in text
    assert storage_pass_of(text) == "s3cret"
    assert storage_pass_of("StorageUser=slurm\n") is None


def _fake_daemons(tmp_path: Path, pid: int) -> dict[str, devcluster.Daemon]:
    daemons = {}
    for name in devcluster.ORDER:
        pid_file = tmp_path / f"{name}.pid"
        pid_file.write_text(f"{pid}\n")
        daemons[name] = devcluster.Daemon(name=name, pid_file=pid_file, log_file=tmp_path / f"{name}.log")
    return daemons


def test_pid_files_count_only_when_proc_comm_matches(tmp_path: Path) -> None:
    me = os.getpid()
    comm = Path(f"/proc/{me}/comm").read_text().strip()
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{me}\n")
    assert devcluster.running_pid(devcluster.Daemon(name=comm, pid_file=pid_file, log_file=tmp_path / "x.log")) == me
    # The same pid under another daemon's name (a reused pid): not that daemon.
    assert devcluster.running_pid(devcluster.Daemon(name="slurmctld", pid_file=pid_file, log_file=pid_file)) is None
    assert devcluster.running_pid(devcluster.Daemon(name=comm, pid_file=tmp_path / "none.pid", log_file=pid_file)) is None


def test_down_never_signals_a_process_that_is_not_the_daemon(tmp_path: Path, monkeypatch) -> None:
    # Every pid file names this test process: down() must see that none is a daemon, kill nothing,
    # and clear the stale pid files.
    monkeypatch.setattr(devcluster, "DAEMONS", _fake_daemons(tmp_path, os.getpid()))
    assert devcluster.down() == []
    assert not any(tmp_path.glob("*.pid"))
    assert devcluster.down() == []  # and again: stopping a stopped cluster is a no-op


def test_wait_ready_names_the_daemon_and_its_log(tmp_path: Path) -> None:
    log_file = tmp_path / "slurmctld.log"
    log_file.write_text("error: something useful\n")
    daemon = devcluster.Daemon(name="slurmctld", pid_file=tmp_path / "none.pid", log_file=log_file)
    with pytest.raises(devcluster.ClusterError) as info:
        daemons.wait_ready(daemon, lambda: False, "says UP", timeout_s=0.3)
    message = str(info.value)
    assert message.startswith("slurmctld did not get ready (says UP) within 0 s")
    assert str(log_file) in message and "error: something useful" in message


def test_a_config_not_written_here_is_never_overwritten(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=production\n")
    with pytest.raises(devcluster.ClusterError, match="refusing to overwrite"):
        devcluster._write_ours(conf, MARKER + "\n", mode=0o644, users=())
    assert conf.read_text() == "ClusterName=production\n"
    ours = tmp_path / "slurmdbd.conf"
    devcluster._write_ours(ours, MARKER + "\nStoragePass=x\n", mode=0o600, users=())
    assert ours.stat().st_mode & 0o777 == 0o600


def test_up_explains_what_is_missing(monkeypatch) -> None:
    monkeypatch.setattr(devcluster, "missing_packages", lambda: ["slurmd", "slurmdbd"])
    monkeypatch.setattr(devcluster.os, "geteuid", lambda: 0)
    with pytest.raises(devcluster.ClusterError, match=r"packages missing: slurmd, slurmdbd; run: python -m slurm\.devcluster install"):
        devcluster.up()
    monkeypatch.setattr(devcluster.os, "geteuid", lambda: 1000)
    with pytest.raises(devcluster.ClusterError, match="needs root"):
        devcluster.up()
