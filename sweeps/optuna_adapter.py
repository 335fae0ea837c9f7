"""Every use of Optuna's private API, in one module: an Optuna upgrade that changes one breaks here.

The ledger needs three things Optuna does not make public:
- a trial's storage id (`FrozenTrial._trial_id`, `Trial._trial_id`), the key of every storage
  call on an attempt. The public route (`storage.get_trial_id_from_study_id_trial_number`) costs a
  query per trial, once per attempt in every listing of a 10,000-run sweep;
- a study's storage id (`Study._study_id`); the public route is a query by name;
- the heartbeat: whether a storage records one (`optuna.storages._heartbeat.BaseHeartbeat`, with
  an interval set) and which of a study's running trials have gone quiet
  (`BaseHeartbeat._get_stale_trial_ids`, the one query `optuna.storages.fail_stale_trials` uses;
  that function fails every quiet trial at once, whereas the ledger decides per attempt whether
  its job is still alive in a scheduler's queue).

Nothing else in the code base may touch these (`tests/unit/test_optuna_adapter.py` greps for
them), and the same test checks that each function still answers as the public API does, on
every storage the ledger runs on.
"""

from __future__ import annotations

from typing import cast

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial


def trial_id_of(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage id of a trial (what `storage.get_trial(...)`, `set_trial_*` take)."""
    return int(trial._trial_id)


def study_id_of(study: optuna.Study) -> int:
    """The storage id of a study (what `storage.get_all_trials(...)` and the heartbeat take)."""
    return int(study._study_id)


def has_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    """Whether the storage records Optuna heartbeats (RDB storages with heartbeat_interval set)."""
    return isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None


def record_heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """Record the trial's Optuna heartbeat now; the storage must have one (`has_heartbeat`)."""
    _heartbeat(storage).record_heartbeat(trial_id)


def stale_trial_ids(storage: optuna.storages.BaseStorage, study_id: int) -> list[int]:
    """The running trials of a study whose heartbeat is older than the storage's grace period
    (trials that never beat are not among them). Reads only; nothing is failed."""
    return list(_heartbeat(storage)._get_stale_trial_ids(study_id))


def _heartbeat(storage: optuna.storages.BaseStorage) -> BaseHeartbeat:
    if not has_heartbeat(storage):
        raise TypeError(f"{type(storage).__name__} records no Optuna heartbeat (check has_heartbeat first)")
    return cast(BaseHeartbeat, storage)


__all__ = ["has_heartbeat", "record_heartbeat", "stale_trial_ids", "study_id_of", "trial_id_of"]
