"""RunTracker against real W&B (no mocks): an unreachable server costs a run a bounded wait and
leaves an offline copy that `sweep sync` can upload; the reason for the fallback is exposed.

The unreachable server is a closed localhost port: W&B's service retries it until its init
deadline, which reproduces the ~92 s hang of the default settings (measured; a TEST-NET address
behaves the same where the sandbox refuses the connection). The offline copy is checked by
reading W&B's own `.wandb` record log back (a LevelDB-style log of protobuf records), so the
test asserts on the values logged, not only on a folder existing.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gr_core.config import config_from_dict
from sweeps.spec import TrackingConfig
from sweeps.tracking import RunTracker

TIMEOUT_S = 2.0
# Starting W&B's service twice (online, then offline) and tearing one down takes ~2-3 s here;
# the old code waited ~92 s, so the bound still separates them by an order of magnitude.
SLACK_S = 12.0
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 hex chars: passes W&B's format check


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep W&B's config/cache out of $HOME and stop its service process after the test."""
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    yield
    import wandb

    wandb.teardown()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _records(path: Path) -> list[Any]:
    """Protobuf records of a `.wandb` file: a 7-byte W&B header, then 32 KiB blocks of
    (crc32 u32, length u16, type u8) chunks; type 1 = full record, 2/3/4 = first/middle/last."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def _logged(run_dir: Path, run_key: str) -> dict[str, Any]:
    """The run id, config, and history rows (by _step) stored in an offline run's record log."""
    records = _records(run_dir / f"run-{run_key}.wandb")
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            history[row["_step"]] = row
    return {"run_id": run.run_id, "group": run.run_group, "config": config, "history": history}


def _track(directory: Path, tracking: TrackingConfig, run_key: str) -> tuple[RunTracker, float]:
    started = time.perf_counter()
    tracker = RunTracker(
        tracking, directory=directory, group="sweep-x", name="run-x", run_key=run_key, config={"model": {"dim": 8}}
    )
    return tracker, time.perf_counter() - started


def test_unreachable_host_costs_at_most_the_timeout_and_leaves_an_offline_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wandb_env: None
) -> None:
    port = _closed_port()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    tracker, elapsed = _track(tmp_path / "sweep", TrackingConfig(mode="online", init_timeout_s=TIMEOUT_S), "abc-a1")

    assert elapsed < TIMEOUT_S + SLACK_S, f"W&B start took {elapsed:.1f} s with init_timeout_s = {TIMEOUT_S}"
    assert tracker.active and tracker.mode == "offline"
    assert tracker.fallback is not None
    assert "online start failed" in tracker.fallback and f"127.0.0.1:{port}" in tracker.fallback
    assert "init_timeout_s = 2 s" in tracker.fallback and "sweep sync" in tracker.fallback
    assert "\n" not in tracker.fallback  # one line, fit for the ledger and the driver's console

    tracker.log({"val/ndcg@10": 0.25, "train/loss": 3.5}, step=1)
    tracker.log({"val/ndcg@10": 0.375, "train/loss": 2.75}, step=2)
    tracker.finish()
    offline = sorted((tmp_path / "sweep" / "wandb").glob("offline-run-*"))
    assert [p.name.rsplit("-", 2)[-2:] for p in offline] == [["abc", "a1"]]
    logged = _logged(offline[0], "abc-a1")
    # Same id as the attempt's online run would have had, so a later sync resumes that run.
    assert logged["run_id"] == "abc-a1" and logged["group"] == "sweep-x"
    assert logged["config"]["model"] == {"dim": 8}
    assert logged["history"][1]["val/ndcg@10"] == 0.25 and logged["history"][1]["train/loss"] == 3.5
    assert logged["history"][2]["val/ndcg@10"] == 0.375 and logged["history"][2]["train/loss"] == 2.75


def test_offline_mode_logs_without_a_fallback(tmp_path: Path, wandb_env: None) -> None:
    tracker, _ = _track(tmp_path, TrackingConfig(mode="offline"), "def-a2")
    assert tracker.active and tracker.mode == "offline" and tracker.fallback is None
    tracker.log({"val/hr@10": 0.5}, step=1)
    tracker.finish()
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    assert _logged(offline, "def-a2")["history"][1]["val/hr@10"] == 0.5


def test_disabled_mode_starts_nothing(tmp_path: Path) -> None:
    tracker, _ = _track(tmp_path, TrackingConfig(mode="disabled"), "ghi-a1")
    assert not tracker.active and tracker.fallback is None and tracker.mode == "disabled"
    tracker.log({"x": 1.0}, step=1)  # a no-op, not an error
    tracker.finish()
    assert not (tmp_path / "wandb").exists()


def test_init_timeout_is_validated_from_toml() -> None:
    assert TrackingConfig().init_timeout_s == 30.0
    assert config_from_dict(TrackingConfig, {"init_timeout_s": 5}, where="s.toml").init_timeout_s == 5.0
    with pytest.raises(ValueError, match=r"s.toml: tracking.init_timeout_s must be > 0 seconds, got -1"):
        config_from_dict(TrackingConfig, {"init_timeout_s": -1}, where="s.toml", prefix="tracking.")
