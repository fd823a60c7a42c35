"""Many workers, one study: exactly n_trials trials, none twice, none lost, dead ones retried.

The workers are real ``python -m dcgd sweep`` processes on a real Optuna storage (a sqlite
file, a journal file, or a PostgreSQL server the suite starts) with real MLflow tracking;
only the objective is a cheap toy that leaves marker files saying which process ran which
trial.
"""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from dcgd.cli import main
from dcgd.sweeps.storage import STORAGE_ENV, open_storage, resolve_url
from tests.sweeps.conftest import finish, markers, start_worker, study_name, write_spec

GRID = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]


def _study(storage: str, workdir) -> optuna.Study:
    # The URL as a user gives it, resolved as the runner does (psycopg2 where psycopg 3 is
    # absent); open_storage also opens a journal, which a bare URL does not.
    return optuna.load_study(
        study_name=study_name(workdir), storage=open_storage(resolve_url(storage))
    )


def _children(workdir, experiment: str = "toy") -> tuple[list, list]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("dcgd.role") == "study"]
    children = [r for r in runs if r.data.tags.get("dcgd.role") == "trial"]
    return parents, children


def _storage_url(request, workdir) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    if request.param == "journal":
        return f"journal:///{workdir / 'sweeps' / 'optuna.log'}"
    return f"sqlite:///{workdir / 'sweeps' / 'optuna.db'}"


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage(request, workdir):
    return _storage_url(request, workdir)


@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates_or_losses(workdir, storage):
    spec = write_spec(
        workdir / "toy.yaml",
        function={"args": {"markers": str(workdir / "markers"), "barrier": 2}},
        storage={"heartbeat_interval": 1, "grace_period": 60},  # a finished worker polls each 1 s
    )
    workers = [start_worker(spec, workdir, storage) for _ in range(2)]
    outputs = [finish(w) for w in workers]
    for code, output in outputs:
        assert code == 0, output

    trials = _study(storage, workdir).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert sorted(t.params["x"] for t in trials) == GRID  # every grid point exactly once
    done = markers(workdir, "done")
    assert sorted(n for n, _ in done) == list(range(6))  # each trial ran once, none lost
    # Both processes ran trials (the toy's barrier held each one's first trial until the other
    # had started one), so this really was two workers side by side.
    assert {pid for _, pid in done} == {w.pid for w in workers}
    # One parent run for the study, whichever worker came first; one child per trial.
    parents, children = _children(workdir)
    assert len(parents) == 1
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == list(range(6))
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgresql", marks=pytest.mark.slow)])
def kill_storage(request, workdir):
    return _storage_url(request, workdir)


@pytest.mark.slow
def test_a_killed_workers_trial_is_retried(workdir, kill_storage):
    spec = write_spec(workdir / "toy.yaml", storage={"heartbeat_interval": 1, "grace_period": 3})
    doomed = start_worker(spec, workdir, kill_storage, TOY_HANG="1")
    deadline = time.monotonic() + 300
    while not markers(workdir, "start"):  # wait until it is inside its first trial
        assert doomed.poll() is None, finish(doomed)[1]
        assert time.monotonic() < deadline, "the worker never started a trial"
        time.sleep(0.1)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    [(dead_number, dead_pid)] = markers(workdir, "start")
    assert dead_pid == doomed.pid

    code, output = finish(start_worker(spec, workdir, kill_storage))
    assert code == 0, output

    trials = _study(kill_storage, workdir).get_trials()
    states = {t.number: t.state for t in trials}
    assert states.pop(dead_number) == TrialState.FAIL  # the dead worker's trial...
    assert set(states.values()) == {TrialState.COMPLETE}
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead_number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE  # ...ran again, once
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == GRID
    assert sorted(n for n, _ in markers(workdir, "done")) == sorted(t.number for t in complete)
    # The dead trial's MLflow run does not stay RUNNING forever.
    _, children = _children(workdir)
    dead_run = [r for r in children if r.data.tags["optuna.trial"] == str(dead_number)]
    assert [r.info.status for r in dead_run] == ["KILLED"]


def test_rerun_adds_nothing_and_a_larger_n_trials_adds_the_difference(workdir, capsys):
    spec = write_spec(workdir / "toy.yaml", sampler={"name": "random", "seed": 0}, n_trials=3,
                      search_space={"x": {"low": 0.0, "high": 1.0}})  # fmt: skip
    storage = f"sqlite:///{workdir / 'sweeps' / 'optuna.db'}"

    assert main(["sweep", "--config", str(spec)]) == 0
    assert (workdir / "sweeps" / "optuna.db").is_file()  # the default storage
    assert len(_study(storage, workdir).trials) == 3
    assert main(["sweep", "--config", str(spec)]) == 0
    assert len(_study(storage, workdir).trials) == 3
    assert len(markers(workdir, "start")) == 3  # the re-run ran nothing
    assert main(["sweep", "--config", str(spec), "--n-trials", "5"]) == 0
    trials = _study(storage, workdir).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(n for n, _ in markers(workdir, "start")) == [0, 1, 2, 3, 4]
    assert "this worker ran 2 trial(s)" in capsys.readouterr().out


def test_a_journal_file_holds_the_study_for_a_shared_file_system(workdir, monkeypatch):
    spec = write_spec(workdir / "toy.yaml", n_trials=3)
    assert main(["sweep", "--config", str(spec), "--storage", "journal:///sweeps/optuna.log"]) == 0
    assert (workdir / "sweeps" / "optuna.log").is_file()  # relative to where the worker runs
    assert not (workdir / "sweeps" / "optuna.db").exists()
    storage = f"journal:///{workdir / 'sweeps' / 'optuna.log'}"
    trials = _study(storage, workdir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert len({t.params["x"] for t in trials}) == 3  # three grid points, none twice
    monkeypatch.setenv(STORAGE_ENV, storage)  # the storage from the environment, as on a cluster
    assert main(["sweep", "--config", str(spec), "--n-trials", "6"]) == 0
    trials = _study(storage, workdir).trials
    assert sorted(t.params["x"] for t in trials) == GRID
    assert sorted(n for n, _ in markers(workdir, "start")) == list(range(6))


def test_grid_stops_when_exhausted_even_with_more_trials_asked(workdir):
    spec = write_spec(workdir / "toy.yaml", n_trials=50)
    assert main(["sweep", "--config", str(spec)]) == 0
    trials = _study(f"sqlite:///{workdir / 'sweeps' / 'optuna.db'}", workdir).trials
    assert sorted(t.params["x"] for t in trials) == GRID


def test_a_refused_configuration_is_spent_and_the_sweep_goes_on(workdir):
    spec = write_spec(workdir / "toy.yaml", n_trials=2, search_space={"x": ["refuse", 0.2]})
    storage = f"sqlite:///{workdir / 'sweeps' / 'optuna.db'}"
    assert main(["sweep", "--config", str(spec)]) == 0
    states = {t.params["x"]: t.state for t in _study(storage, workdir).trials}
    assert states == {"refuse": TrialState.FAIL, 0.2: TrialState.COMPLETE}
    assert main(["sweep", "--config", str(spec)]) == 0  # tried once is enough: no retry
    assert len(_study(storage, workdir).trials) == 2


def test_a_crashing_trial_stops_the_worker_and_is_queued_again(workdir):
    spec = write_spec(workdir / "toy.yaml", n_trials=1, search_space={"x": ["crash"]})
    with pytest.raises(ValueError, match="toy crash"):
        main(["sweep", "--config", str(spec)])
    trials = _study(f"sqlite:///{workdir / 'sweeps' / 'optuna.db'}", workdir).trials
    assert [(t.state, t.params["x"]) for t in trials] == [
        (TrialState.FAIL, "crash"),
        (TrialState.WAITING, "crash"),  # the next worker (or re-run) retries it
    ]
    _, [child] = _children(workdir)
    assert child.info.status == "FAILED"
    assert "toy crash" in child.data.tags["dcgd.error"]


def test_a_result_that_arrives_after_a_peer_retried_the_trial_is_not_counted(workdir):
    spec = write_spec(workdir / "toy.yaml", n_trials=1, search_space={"x": ["late"]})
    assert main(["sweep", "--config", str(spec)]) == 0
    trials = _study(f"sqlite:///{workdir / 'sweeps' / 'optuna.db'}", workdir).trials
    # Trial 0 finished its work, but a peer had already failed it and queued trial 1: only the
    # retry counts, and the sweep stops there (one trial asked, one result).
    assert [(t.number, t.state) for t in trials] == [
        (0, TrialState.FAIL),
        (1, TrialState.COMPLETE),
    ]
    assert trials[1].system_attrs["failed_trial"] == 0
    _, children = _children(workdir)
    status = {r.data.tags["optuna.trial"]: r.info.status for r in children}
    assert status == {"0": "FAILED", "1": "FINISHED"}
