"""Config files of the development cluster (slurm.conf, slurmdbd.conf) as text: pure functions.

The settings are the ones verified on this kind of machine (see shared/slurm-notes.md); each
non-obvious one says why. Kept apart from `devcluster` (which starts processes) so the text can
be tested on a machine without Slurm.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

MARKER = "# Written by gr-scaling (slurm/devcluster.py) for a single-node development cluster."
CLUSTER_NAME = "dev"
PARTITION = "dev"
DB_NAME = "slurm_acct_db"
DB_USER = "slurm"
SLURMDBD_PORT = 6819


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """Where the cluster keeps its files (Debian's locations)."""

    conf_dir: Path = Path("/etc/slurm")
    state_dir: Path = Path("/var/lib/slurm")
    log_dir: Path = Path("/var/log/slurm")
    run_dir: Path = Path("/run")

    @property
    def slurm_conf(self) -> Path:
        return self.conf_dir / "slurm.conf"

    @property
    def slurmdbd_conf(self) -> Path:
        return self.conf_dir / "slurmdbd.conf"

    def pid_file(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.log_dir / f"{daemon}.log"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class NodeHardware:
    """What `slurmd -C` reports; a node declared with more than it has is drained."""

    cpus: int
    boards: int
    sockets_per_board: int
    cores_per_socket: int
    threads_per_core: int
    real_memory_mb: int

    _KEYS = {
        "CPUs": "cpus",
        "Boards": "boards",
        "SocketsPerBoard": "sockets_per_board",
        "CoresPerSocket": "cores_per_socket",
        "ThreadsPerCore": "threads_per_core",
        "RealMemory": "real_memory_mb",
    }

    @classmethod
    def from_slurmd_c(cls, text: str) -> NodeHardware:
        """Parse `slurmd -C` ("NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105" + "UpTime=...")."""
        found = dict(re.findall(r"(\w+)=(\S+)", text))
        missing = [key for key in cls._KEYS if key not in found]
        if missing:
            raise ValueError(f"`slurmd -C` output lacks {missing}: {text.strip()!r}")
        return cls(**{field: int(found[key]) for key, field in cls._KEYS.items()})

    def node_line(self, name: str) -> str:
        return (
            f"NodeName={name} NodeAddr=127.0.0.1 CPUs={self.cpus} Boards={self.boards} "
            f"SocketsPerBoard={self.sockets_per_board} CoresPerSocket={self.cores_per_socket} "
            f"ThreadsPerCore={self.threads_per_core} RealMemory={self.real_memory_mb} State=UNKNOWN"
        )


def slurm_conf(node_name: str, hardware: NodeHardware, layout: Layout) -> str:
    lines = [
        MARKER,
        f"ClusterName={CLUSTER_NAME}",
        # localhost works whatever the machine's hostname is; the node keeps `hostname -s`.
        "SlurmctldHost=localhost",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # A requeued job waits for its old credential to expire before it restarts (~147 s by
        # default, ~20 s with this).
        "AuthInfo=cred_expire=10",
        "MpiDefault=none",
        # No systemd/cgroup v2 delegation here: track processes through /proc, no task binding.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=bf_interval=5,sched_interval=10",
        "ReturnToService=2",
        # submitit's jobs ignore SIGTERM, so a cancel waits KillWait (default 30 s) for SIGKILL.
        "KillWait=5",
        "MailProg=/bin/true",
        f"StateSaveLocation={layout.state_dir / 'slurmctld'}",
        f"SlurmdSpoolDir={layout.state_dir / 'slurmd'}",
        f"SlurmctldPidFile={layout.pid_file('slurmctld')}",
        f"SlurmdPidFile={layout.pid_file('slurmd')}",
        f"SlurmctldLogFile={layout.log_file('slurmctld')}",
        f"SlurmdLogFile={layout.log_file('slurmd')}",
        # Without slurmdbd `sacct` always fails, and submitit then never sees a cancelled or
        # killed job reach a final state (its result() blocks forever).
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=localhost",
        "JobAcctGatherType=jobacct_gather/linux",
        hardware.node_line(node_name),
        f"PartitionName={PARTITION} Nodes={node_name} Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def slurmdbd_conf(storage_pass: str, layout: Layout) -> str:
    """slurmdbd.conf; it holds the database password, and slurmdbd refuses it unless mode 0600."""
    lines = [
        MARKER,
        "AuthType=auth/munge",
        "DbdHost=localhost",
        f"DbdPort={SLURMDBD_PORT}",
        "SlurmUser=root",
        f"PidFile={layout.pid_file('slurmdbd')}",
        f"LogFile={layout.log_file('slurmdbd')}",
        "StorageType=accounting_storage/mysql",
        "StorageHost=localhost",
        f"StorageUser={DB_USER}",
        f"StoragePass={storage_pass}",
        f"StorageLoc={DB_NAME}",
    ]
    return "\n".join(lines) + "\n"


def storage_pass_of(text: str) -> str | None:
    """The StoragePass of an existing slurmdbd.conf, to keep the database user's password stable."""
    match = re.search(r"^StoragePass=(\S+)$", text, flags=re.MULTILINE)
    return match.group(1) if match else None


def database_setup_sql(storage_pass: str) -> str:
    """Idempotent: the accounting database and a user with all rights on it (password kept in sync)."""
    return (
        f"CREATE DATABASE IF NOT EXISTS {DB_NAME};"
        f"CREATE USER IF NOT EXISTS '{DB_USER}'@'localhost' IDENTIFIED BY '{storage_pass}';"
        f"ALTER USER '{DB_USER}'@'localhost' IDENTIFIED BY '{storage_pass}';"
        f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'localhost';"
    )
