"""Optuna's private API stays behind `sweeps.optuna_adapter`, and what the adapter reads from it
still agrees with Optuna's public API on every storage the ledger runs on (so an Optuna upgrade
that moves a private name fails here, not in a sweep)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from ledger_backends import Backend, backdate_heartbeat, backend, planned  # noqa: F401 - `backend`: a fixture
from optuna.trial import TrialState

from sweeps import optuna_adapter

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = ROOT / "sweeps" / "optuna_adapter.py"
# Private Optuna names the code base once used directly: trial and study storage ids, the heartbeat
# base class and its stale-trial query, and any import from a private Optuna module.
PRIVATE = re.compile(
    r"\._trial_id\b|\._study_id\b|\._get_stale_trial_ids\b|\bBaseHeartbeat\b"
    r"|\boptuna(?:\.[A-Za-z]\w*)*\._[A-Za-z]\w*"
)
SKIPPED_DIRS = {".venv", ".git", "build", "dist", "node_modules", "__pycache__"}


def _python_files() -> list[Path]:
    return sorted(
        path for path in ROOT.rglob("*.py")
        if not SKIPPED_DIRS & set(path.relative_to(ROOT).parts) and not path.name.endswith(".egg-info")
    )


def test_private_optuna_api_is_used_only_by_the_adapter() -> None:
    this = Path(__file__).resolve()
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _python_files()
        if path.resolve() not in (ADAPTER, this)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if PRIVATE.search(line)
    ]
    assert not found, "private Optuna API outside sweeps/optuna_adapter.py (use its functions):\n" + "\n".join(found)


@pytest.mark.parametrize(
    "line",
    [
        "rid = trial._trial_id",
        "stale = storage._get_stale_trial_ids(study_id)",
        "quiet = stale_heartbeats(ledger.storage, ledger.study._study_id, running)",
        "from optuna.storages._heartbeat import BaseHeartbeat",
        "import optuna._experimental",
        "isinstance(storage, optuna.storages._heartbeat.BaseHeartbeat)",
    ],
)
def test_the_scan_recognises_each_private_use(line: str) -> None:
    assert PRIVATE.search(line)


@pytest.mark.parametrize(
    "line",
    [
        "from optuna.storages import fail_stale_trials",
        "record = trial_id_of(trial)",
        "links = {'trial_id': trial_id_of(trial)}",
        "self._tune_trial = trial_id",
        "optuna.storages.RDBStorage(url)",
    ],
)
def test_the_scan_leaves_public_uses_alone(line: str) -> None:
    assert not PRIVATE.search(line)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")  # study.ask() outside optimize()
def test_ids_agree_with_the_public_lookups(backend: Backend) -> None:
    ledger = backend.open()
    ledger.register([planned("a"), planned("b", 16)])
    storage, study = ledger.storage, ledger.study
    study_id = optuna_adapter.study_id_of(study)
    assert study_id == storage.get_study_id_from_name(study.study_name)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2
    for trial in trials:
        trial_id = optuna_adapter.trial_id_of(trial)
        assert trial_id == storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        assert storage.get_trial(trial_id).user_attrs["run_id"] == trial.user_attrs["run_id"]
    asked = study.ask()  # a live optuna.Trial, as the tuner holds
    assert optuna_adapter.trial_id_of(asked) == storage.get_trial_id_from_study_id_trial_number(study_id, asked.number)
    assert {ledger.runs()[r].trial_id for r in ("a", "b")} == {optuna_adapter.trial_id_of(t) for t in trials}


def test_heartbeat_is_optunas_on_sql_storages_and_absent_on_the_journal(backend: Backend) -> None:
    ledger = backend.open()
    storage, study_id = ledger.storage, optuna_adapter.study_id_of(ledger.study)
    assert optuna_adapter.has_heartbeat(storage) == (backend.kind != "journal")
    ledger.register([planned("quiet"), planned("fresh", 16), planned("silent", 32), planned("done", 64)])
    ids = {run_id: record.trial_id for run_id, record in ledger.runs().items()}
    if backend.kind == "journal":
        for call in (lambda: optuna_adapter.record_heartbeat(storage, ids["quiet"]),
                     lambda: optuna_adapter.stale_trial_ids(storage, study_id)):
            with pytest.raises(TypeError, match="records no Optuna heartbeat"):
                call()
        return
    for run_id in ("quiet", "fresh", "done"):
        storage.set_trial_state_values(ids[run_id], TrialState.RUNNING)
        optuna_adapter.record_heartbeat(storage, ids[run_id])
    storage.set_trial_state_values(ids["silent"], TrialState.RUNNING)  # running, never beat
    assert optuna_adapter.stale_trial_ids(storage, study_id) == []
    backdate_heartbeat(storage, ids["quiet"], seconds=3600)
    backdate_heartbeat(storage, ids["done"], seconds=3600)
    storage.set_trial_state_values(ids["done"], TrialState.COMPLETE, values=[0.5])
    assert optuna_adapter.stale_trial_ids(storage, study_id) == [ids["quiet"]]
    optuna_adapter.record_heartbeat(storage, ids["quiet"])  # it beats again
    assert optuna_adapter.stale_trial_ids(storage, study_id) == []


def test_an_sql_storage_without_a_heartbeat_interval_has_none(tmp_path: Path) -> None:
    plain = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'plain.db'}")
    assert not optuna_adapter.has_heartbeat(plain)
    assert not optuna_adapter.has_heartbeat(optuna.storages.InMemoryStorage())
    plain.engine.dispose()
