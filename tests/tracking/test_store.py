"""The default MLflow store is the ``mlflow.db`` of the directory a command runs in."""

from __future__ import annotations

import mlflow
import pytest

from dcgd.tracking.mlflow import MLflowLogger
from dcgd.tracking.store import absolute_sqlite, resolve_tracking_uri


def test_relative_sqlite_becomes_absolute_other_urls_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert absolute_sqlite("sqlite:///a/b.db?timeout=5") == f"sqlite:///{tmp_path}/a/b.db?timeout=5"
    for unchanged in ("sqlite:////abs/x.db", "sqlite:///:memory:", "http://host:5000", "file:./m"):
        assert absolute_sqlite(unchanged) == unchanged


def test_environment_uri_wins_over_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri() == "http://tracking:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.parametrize("explicit", [None, "sqlite:///mlflow.db"])
def test_two_directories_in_one_process_get_their_own_store(tmp_path, monkeypatch, explicit):
    # MLflow caches stores per URI string: a relative URI used from a second directory would
    # write into the first directory's database.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        logger = MLflowLogger(experiment_name="store-test", tracking_uri=explicit)
        logger.log_metrics({"x": 1.0}, step=0)
        logger.finalize("success")
    for name in ("first", "second"):
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("store-test")
        assert experiment is not None, f"{name}/mlflow.db has no experiment"
        assert len(client.search_runs([experiment.experiment_id])) == 1
