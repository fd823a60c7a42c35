"""MLflow for Lightning runs: the logger with dcgd's defaults, config saving, run ids.

- The store (``sqlite:///mlflow.db`` by default, a server for clusters) is resolved and
  checked by :mod:`dcgd.tracking.store` before training starts, not after the first epoch.
- With a sqlite/http store ``trainer.log_dir`` is None, which breaks LightningCLI's config
  saving; :class:`SaveConfigToMLflow` logs the resolved config to the run instead.
- A fit stopped by SIGTERM or Ctrl-C ends its run KILLED (Lightning says FAILED); a run that
  is continued (``--ckpt_path``) is RUNNING again until it ends. A run whose process was
  SIGKILLed stays RUNNING: nothing could mark it, and resuming continues it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dcgd.tracking.store import (
    DEFAULT_ARTIFACT_DIR,
    TRACKING_URI_ENV,
    check_reachable,
    is_local,
    resolve_tracking_uri,
)


class MLflowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` with dcgd's defaults (sqlite store, explicit artifacts).

    Args:
        experiment_name: MLflow experiment; created on first use.
        run_name: name shown in the MLflow UI.
        tracking_uri: ``sqlite:///mlflow.db`` by default, or ``$MLFLOW_TRACKING_URI``;
            ``http://host:5000`` for a shared server.
        artifact_location: where a NEW experiment stores artifacts; defaults to
            ``./mlartifacts/<experiment>`` for a local store, the server's choice otherwise.
        tags: run tags.
        run_id: continue an existing run (set automatically when resuming a checkpoint).
    """

    def __init__(
        self,
        experiment_name: str = "dcgd",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        artifact_location: str | None = None,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        tracking_uri = resolve_tracking_uri(tracking_uri)
        check_reachable(tracking_uri)
        if artifact_location is None and is_local(tracking_uri):
            artifact_location = (Path(DEFAULT_ARTIFACT_DIR) / experiment_name).resolve().as_uri()
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=tracking_uri,
            artifact_location=artifact_location,
            tags=tags,
            run_id=run_id,
            save_dir=None,
        )

    @property
    def experiment(self) -> Any:
        # Lightning calls mlflow.set_tracking_uri, which also exports MLFLOW_TRACKING_URI: the
        # next run in this process (a sweep trial, a test) would then inherit this store
        # instead of its own directory's default. Keep the environment as the user set it.
        if self._initialized:
            return self._mlflow_client
        continued = self._run_id is not None
        saved = os.environ.get(TRACKING_URI_ENV)
        try:
            client = super().experiment
        finally:
            if saved is None:
                os.environ.pop(TRACKING_URI_ENV, None)
            else:
                os.environ[TRACKING_URI_ENV] = saved
        if continued and self._initialized:  # not on ranks > 0, which log nothing
            # Lightning logs to a continued run as it finds it (KILLED, FINISHED, ...).
            if client.get_run(self._run_id).info.status != "RUNNING":
                client.update_run(self._run_id, status="RUNNING")
        return client

    def finalize(self, status: str = "success") -> None:
        # Lightning calls finalize("failed") while it handles whatever ended the fit; a stop
        # asked by a signal (its SIGTERMException, dcgd's Stopped) or by Ctrl-C is KILLED.
        if status == "failed" and isinstance(
            sys.exc_info()[1], (SIGTERMException, KeyboardInterrupt)
        ):
            status = "KILLED"
        super().finalize(status)


def log_image(logger: Any, image: Any, artifact_file: str) -> bool:
    """Log a PIL image to the MLflow run behind ``logger``; False if it is not MLflow."""
    if not isinstance(logger, MLFlowLogger):
        return False
    logger.experiment.log_image(logger.run_id, image, artifact_file=artifact_file)
    return True


class SaveConfigToMLflow(SaveConfigCallback):
    """Writes the resolved config beside the checkpoints and logs it to the MLflow run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / "config.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_text(logger.run_id, text, "config.yaml")


class RememberMLflowRun(Callback):
    """Stores the MLflow run id in every checkpoint, so ``--ckpt_path`` resumes log to the
    same run (read back by the CLI before the logger is built)."""

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                checkpoint["mlflow_run_id"] = logger.run_id
                return
