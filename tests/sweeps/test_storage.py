"""The journal storage's heartbeats: Optuna's own stale-trial failing and retry work on it."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from dcgd.sweeps.spec import StorageSettings
from dcgd.sweeps.storage import HEARTBEAT_ATTR, open_storage, resolve_url


# Optuna calls heartbeats and fail_stale_trials experimental, and meant for Study.optimize.
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_journal_fails_and_requeues_a_dead_workers_trial(workdir):
    url = resolve_url("journal:///sweeps/optuna.log")
    settings = StorageSettings(heartbeat_interval=30, grace_period=60, max_retry=1)
    storage = open_storage(url, settings)
    study = optuna.create_study(storage=storage, study_name="dead")
    alive, dead = study.ask(), study.ask()
    storage.record_heartbeat(alive._trial_id)
    storage.record_heartbeat(dead._trial_id)
    study.ask()  # no heartbeat yet: never stale (as on RDBStorage)
    # The dead worker's last heartbeat is 10 minutes old, far past the grace period.
    old = time.time() - 600
    storage.set_trial_system_attr(dead._trial_id, f"{HEARTBEAT_ATTR}{dead._trial_id}", old)

    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    running, fail, waiting = TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING
    assert [t.state for t in trials] == [running, fail, running, waiting]
    assert trials[3].system_attrs["failed_trial"] == dead.number

    # The retry carries its dead trial's attributes, old heartbeat included, but that is not
    # its own: once taken, it stays RUNNING until its own heartbeat goes stale.
    assert study.ask().number == 3
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[3].state == running
    # Another storage on the same file (another worker) sees the same study.
    other = optuna.load_study(study_name="dead", storage=open_storage(url))
    assert [t.state for t in other.get_trials()] == [running, fail, running, running]
