"""The training progress bar: Lightning's, without the parts that mean nothing in a dcgd run.

A run limited by ``max_steps`` has ``max_epochs = -1``, which Lightning's rich bar prints as
"Epoch 0/-2"; and ``v_num`` is the MLflow run id's tail, not a version anyone can use (the run
summary at the end names the run).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE


def _without_version(metrics: dict[str, Any]) -> dict[str, Any]:
    metrics.pop("v_num", None)
    return metrics


class StepsRichProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        epochs = self.trainer.max_epochs
        if epochs is not None and epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"  # the bar itself counts the steps
        return f"{description:{len(self.validation_description)}}"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


class StepsTQDMProgressBar(TQDMProgressBar):
    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


def progress_bar() -> RichProgressBar | TQDMProgressBar:
    """The rich bar where ``rich`` is installed (as Lightning chooses), else tqdm's."""
    return StepsRichProgressBar() if _RICH_AVAILABLE else StepsTQDMProgressBar()
