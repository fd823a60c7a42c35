"""MLflow for sweeps: one parent run per study, one child run per trial.

Written here rather than taken from Optuna, whose MLflow callback is deprecated. Child runs
carry the ``mlflow.parentRunId`` tag (the MLflow UI nests them under the study), the trial's
parameters, its metrics as ``<metric>/<bucket>`` plus ``objective``, an image grid, and the
tags ``optuna.study`` / ``optuna.trial`` / ``optuna.state``. The parent run's id is kept in
the study's user attributes, so every worker of the study logs under the same parent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from dcgd.errors import TrackingError
from dcgd.tracking.store import (
    DEFAULT_ARTIFACT_DIR,
    check_reachable,
    is_local,
    resolve_tracking_uri,
)

PARENT_ATTR = "mlflow_parent_run_id"
RUN_ATTR = "mlflow_run_id"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def metric_items(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{metric: {bucket: v}}`` -> ``{"metric/bucket": v}``, empty buckets (NaN) left out."""
    out = {}
    for metric, per_bucket in metrics.items():
        for bucket, value in per_bucket.items():
            if value is not None and not math.isnan(float(value)):
                out[f"{metric}/{bucket}"] = float(value)
    return out


class StudyTracker:
    def __init__(self, experiment: str, tracking_uri: str | None, study: str) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.study = study
        self.client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None

    # --------------------------------------------------------------------- study
    def setup(
        self, study: optuna.Study, tags: Mapping[str, str], params: Mapping[str, Any]
    ) -> None:
        """Experiment and parent run; call it while holding the study lock."""
        check_reachable(self.uri)
        try:
            self.client = MlflowClient(self.uri)
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                location = None
                if is_local(self.uri):
                    location = (Path(DEFAULT_ARTIFACT_DIR) / self.experiment).resolve().as_uri()
                self.experiment_id = self.client.create_experiment(self.experiment, location)
            else:
                self.experiment_id = found.experiment_id
            self.parent_run_id = self._existing_parent(study)
            if self.parent_run_id is None:
                run = self.client.create_run(
                    self.experiment_id,
                    run_name=self.study,
                    tags={"dcgd.study": self.study, "dcgd.role": "study", **tags},
                )
                self.parent_run_id = run.info.run_id
                study.set_user_attr(PARENT_ATTR, self.parent_run_id)
                self._log(self.parent_run_id, params=params)
            else:
                self.client.update_run(self.parent_run_id, status="RUNNING")
                self._log(self.parent_run_id, tags=tags)  # e.g. a larger n_trials
        except TrackingError:
            raise
        except Exception as err:
            raise TrackingError(
                f"MLflow at {self.uri} refused the sweep's runs ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:200]}); check MLFLOW_TRACKING_URI or "
                "tracking.tracking_uri"
            ) from None

    def _existing_parent(self, study: optuna.Study) -> str | None:
        run_id = study.user_attrs.get(PARENT_ATTR)
        if not run_id:
            return None
        try:  # the study may have been tracked in another MLflow store
            run = self.client.get_run(run_id)
        except Exception:
            return None
        return run_id if run.info.experiment_id == self.experiment_id else None

    def finish(self, study: optuna.Study) -> None:
        """Best trial on the parent run; the parent is FINISHED once no trial is left."""
        tags = {"optuna.n_trials": str(len(study.trials))}
        metrics = {}
        try:
            best = study.best_trial
        except ValueError:
            best = None
        if best is not None:
            metrics["best_objective"] = best.value
            tags["best_trial"] = str(best.number)
            tags["best_params"] = str(best.params)[:MAX_PARAM_CHARS]
            if best.user_attrs.get(RUN_ATTR):
                tags["best_run_id"] = best.user_attrs[RUN_ATTR]
        self._log(self.parent_run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(self.parent_run_id, "FINISHED")

    # --------------------------------------------------------------------- trials
    def start_trial(
        self, trial: optuna.trial.Trial, params: Mapping[str, Any], retry_of: list[int]
    ) -> str:
        """The trial's child run; ``retry_of``: the numbers of the dead trials it repeats."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.study}-trial-{trial.number:04d}",
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "dcgd.study": self.study,
                "dcgd.role": "trial",
                "optuna.study": self.study,
                "optuna.trial": str(trial.number),
                "optuna.state": "RUNNING",
            },
        )
        run_id = run.info.run_id
        trial.set_user_attr(RUN_ATTR, run_id)
        self._log(run_id, params=params)
        # A retry of a trial whose worker died: close the dead trial's run.
        for number in retry_of:
            self._close_dead_trial(trial.study, number)
        return run_id

    def _close_dead_trial(self, study: optuna.Study, number: int) -> None:
        trials = study.get_trials(deepcopy=False)
        dead = next((t for t in trials if t.number == number), None)
        if dead is None or not dead.user_attrs.get(RUN_ATTR):
            return
        run_id = dead.user_attrs[RUN_ATTR]
        if self.client.get_run(run_id).info.status == "RUNNING":
            self.client.set_tag(run_id, "optuna.state", dead.state.name)
            self.client.set_terminated(run_id, "KILLED")

    def end_trial(
        self,
        run_id: str,
        state: str,
        metrics: Mapping[str, Mapping[str, float]] | None = None,
        value: float | None = None,
        image: Any = None,
        params: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        flat = metric_items(metrics or {})
        if value is not None:
            flat["objective"] = value
        tags = {"optuna.state": state}
        if error:
            tags["dcgd.error"] = error[:MAX_PARAM_CHARS]
        self._log(run_id, metrics=flat, params=params or {}, tags=tags)
        if image is not None:
            self.client.log_image(run_id, image, artifact_file="grids/removal.png")
        status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}[state]
        self.client.set_terminated(run_id, status)

    def _log(
        self,
        run_id: str,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )
