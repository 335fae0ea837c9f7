"""The one-driver-per-sweep lock: refused while held, free once its holder dies however it dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.driver import DriverLock, SweepBusy, read_driver
from sweeps.status import format_status
from sweeps.spec import spec_from_dict

HOLD = """
import sys, time
from sweeps.driver import DriverLock
with DriverLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(sweep_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(sweep_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_driver_is_named_and_a_killed_one_frees_the_directory(tmp_path: Path) -> None:
    assert read_driver(tmp_path) is None
    holder = _holder(tmp_path)
    try:
        info = read_driver(tmp_path)
        assert (info.host, info.pid, info.alive) == (socket.gethostname(), holder.pid, True)
        with pytest.raises(SweepBusy, match=rf"already being driven by pid {holder.pid} on {socket.gethostname()}"):
            with DriverLock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    stale = read_driver(tmp_path)  # the record survives a SIGKILL, the lock does not
    assert stale is not None and stale.pid == holder.pid and not stale.alive
    status = format_status(spec_from_dict({}, source="s.toml"), {}, driver=stale)
    assert f"driver pid {holder.pid} on {socket.gethostname()}" in status and "died without finishing" in status
    with DriverLock(tmp_path):
        mine = read_driver(tmp_path)
        assert mine.pid == os.getpid() and mine.alive and time.time() - mine.started < 60
    assert read_driver(tmp_path) is None  # a driver that ends cleanly leaves no record


def test_stopping_a_driver_that_exited_but_was_not_reaped_returns_at_once(tmp_path: Path) -> None:
    """`sweep cancel` run from the process that detached the driver (its parent, which has not
    reaped it): the exited driver is a zombie, which `kill(pid, 0)` still finds. Waiting for it
    to disappear took the whole 30 s timeout and then a SIGKILL."""
    from sweeps.control import _stop_driver

    holder = _holder(tmp_path)
    start = time.monotonic()
    _stop_driver(holder.pid, timeout_s=20.0)
    assert time.monotonic() - start < 10.0
    assert holder.wait(timeout=5) == -signal.SIGTERM  # it stopped on the SIGTERM, not a SIGKILL
