"""At the end of ``fit``: where everything went, printed once."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only


class RunSummary(L.Callback):
    """Prints the run directory, checkpoints and MLflow run when training ends."""

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        root = Path(trainer.default_root_dir).resolve()
        lines = ["", f"dcgd: run directory {root}"]
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint):
                if callback.last_model_path:
                    lines.append(f"  last checkpoint  {callback.last_model_path}")
                if (
                    callback.best_model_path
                    and callback.best_model_path != callback.last_model_path
                ):
                    lines.append(f"  best checkpoint  {callback.best_model_path}")
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                uri = logger._tracking_uri
                lines.append(
                    f"  mlflow run       {logger.run_id} (experiment {logger._experiment_name!r}"
                    f", store {uri})"
                )
                if uri.startswith("sqlite:"):
                    lines.append(f"  browse with      mlflow ui --backend-store-uri {uri}")
        print("\n".join(lines), flush=True)
