"""The ledger on a real PostgreSQL server (`[ledger] url = "postgresql://..."`, for sweeps whose
jobs run on many nodes): a sweep recorded end to end, attempts claimed by racing processes, and
a wrong URL refused with a message that names the setting."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from gr_scaling.cli import main
from sweeps.launch import launch_sweep
from sweeps.ledger import Ledger, PlannedRun

SPEC = """
[sweep]
name = "{name}"
metric = "ndcg@10"
max_attempts = 1

[axes]
width = [8, 16]

[base.data]
num_users = 40
num_items = 60
num_clusters = 6
min_events = 6
max_events = 20

[base.model]
max_seq_len = 16

[base.train]
epochs = 2
batch_size = 32
num_negatives = 16

[dispatch]
executor = "local"
max_parallel = 2
poll_interval_s = 0.2

[tracking]
mode = "disabled"

[ledger]
url = "{url}"
"""


def test_sweep_on_a_postgres_ledger_records_every_run(postgres_url: str, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(name="pg-e2e", url=postgres_url))
    sweep_dir = tmp_path / "sweep"
    summary = launch_sweep(spec, sweep_dir)
    assert summary.completed == 2 and summary.failed == []
    assert not (sweep_dir / "ledger.db").exists()  # nothing went to a local SQLite file

    runs = Ledger(postgres_url, "pg-e2e").runs()
    assert {r.axis_values["width"] for r in runs.values()} == {8, 16}
    for run in runs.values():
        assert run.state == "complete" and run.attempts == 1
        assert 0.0 <= run.metrics["ndcg@10"] <= run.metrics["hr@10"] <= 1.0
        assert run.value == run.metrics["ndcg@10"] and run.flops["train"] > 0
    capsys.readouterr()
    assert main(["sweep", "status", str(sweep_dir)]) == 0
    assert "complete 2, running 0, pending 0, failed 0" in capsys.readouterr().out
    assert main(["sweep", "export", str(sweep_dir), str(tmp_path / "runs.csv")]) == 0
    assert len((tmp_path / "runs.csv").read_text().splitlines()) == 3

    again = launch_sweep(spec, sweep_dir)  # a second launch finds everything done in Postgres
    assert again.completed == 0 and again.skipped_complete == 2


def _claim_all(url: str, study: str, start_at: float) -> list[int]:
    ledger = Ledger(url, study)
    trial_ids = [record.trial_id for record in ledger.pending()]
    time.sleep(max(0.0, start_at - time.time()))
    return [trial_id for trial_id in trial_ids if ledger.claim(trial_id)]


def test_racing_workers_each_claim_distinct_attempts(postgres_url: str) -> None:
    ledger = Ledger(postgres_url, "pg-race")
    ledger.register([
        PlannedRun(run_id=f"run{i}", axis_values={"i": i}, config={}, flops={"train": float(i + 1)}, params={})
        for i in range(12)
    ])
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        start_at = time.time() + 4.0  # after every process has imported optuna and read the attempts
        claimed = pool.starmap(_claim_all, [(postgres_url, "pg-race", start_at)] * 6)
    every = [trial_id for ids in claimed for trial_id in ids]
    assert len(every) == len(set(every)) == 12  # each attempt claimed once, none lost
    assert {r.state for r in Ledger(postgres_url, "pg-race").runs().values()} == {"running"}


def test_a_wrong_postgres_url_names_the_setting_and_leaves_the_ledger_alone(postgres_url: str, tmp_path: Path) -> None:
    ledger = Ledger(postgres_url, "pg-kept")
    ledger.register([PlannedRun(run_id="kept", axis_values={}, config={}, flops={"train": 1.0}, params={})])
    wrong_port = postgres_url.replace(postgres_url.split(":")[-1].split("/")[0], "1")
    for url in (wrong_port, postgres_url.rsplit("/", 1)[0] + "/no_such_db"):
        with pytest.raises(ValueError, match=r"\[ledger\] url.*cannot connect") as raised:
            Ledger(url, "pg-kept")
        assert "no_such_db" in str(raised.value) or ":1/" in str(raised.value)
    assert list(Ledger(postgres_url, "pg-kept").runs()) == ["kept"]
