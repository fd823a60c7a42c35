"""Pruning a training trial from its validation metric, in the sweep's process or a child.

``TrialPruning`` is optuna-integration's ``PyTorchLightningPruningCallback`` rebuilt from
what a config can carry (storage URL, study, trial id, pruner settings), so the same callback
works when the fit runs inside the sweep process and when it is launched as a child
(``srun`` / ``torchrun``, DDP) while Optuna stays in the sweep process. Two changes:

- values are reported at ``trainer.global_step``, not the epoch: dcgd validates every
  ``val_check_interval`` steps inside one long epoch, where per-epoch reports would all land
  on step 0 and all but the first be ignored;
- it always takes the callback's DDP path: rank 0 reports and decides, every rank stops, and
  the decision is written to the trial's system attributes (the keys optuna-integration uses).
  The sweep reads it after the fit (``raise_if_pruned``), whichever process ran the fit.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import lightning as L
import optuna
from optuna.storages.journal import JournalStorage
from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback

from dcgd.sweeps.spec import build_pruner
from dcgd.sweeps.storage import STORAGE_ENV, open_storage

# optuna_integration.pytorch_lightning's system attribute keys (module constants there).
PRUNED_KEY = "ddp_pl:pruned"
STEP_KEY = "ddp_pl:epoch"


class TrialPruning(PyTorchLightningPruningCallback):
    """Report ``monitor`` to Optuna trial ``trial_id`` at each validation; stop when pruned.

    Args:
        study_name: the Optuna study.
        trial_id: the trial's storage id (not its number).
        monitor: the logged validation metric, e.g. ``val/loss``.
        pruning: the spec's ``pruning`` section (the pruner is not kept in the storage).
        storage: the storage URL; default ``$DCGD_SWEEP_STORAGE``.
    """

    def __init__(
        self,
        study_name: str,
        trial_id: int,
        monitor: str,
        pruning: dict[str, Any] | None = None,
        storage: str | None = None,
    ) -> None:
        url = storage or os.environ[STORAGE_ENV]
        study = optuna.load_study(
            study_name=study_name,
            storage=open_storage(url),  # a URL alone would not open a journal
            pruner=build_pruner(pruning or {}),
            sampler=optuna.samplers.RandomSampler(),  # never samples: the trial has its params
        )
        super().__init__(optuna.trial.Trial(study, trial_id), monitor)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The parent refuses every storage but RDBStorage under DDP, for its cache; a journal
        # has no cache (each read catches up with the file), so it skips that check.
        if not isinstance(self._trial.storage, JournalStorage):
            super().on_fit_start(trainer, pl_module)
        self.is_ddp_backend = True  # report from rank 0, stop every rank (see module doc)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            warnings.warn(
                f"pruning: {self.monitor!r} was not logged in validation (logged: "
                f"{sorted(trainer.callback_metrics)}); this trial cannot be pruned",
                stacklevel=2,
            )
            return
        step = trainer.global_step
        should_stop = False
        if trainer.is_global_zero:
            self._trial.report(float(score), step=step)
            should_stop = self._trial.should_prune()
        should_stop = trainer.strategy.broadcast(should_stop)
        if not should_stop:
            return
        trainer.should_stop = True
        if trainer.is_global_zero:
            storage = self._trial.storage
            storage.set_trial_system_attr(self._trial._trial_id, PRUNED_KEY, True)
            storage.set_trial_system_attr(self._trial._trial_id, STEP_KEY, step)


def raise_if_pruned(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """After the fit: ``optuna.TrialPruned`` if the callback (in any process) pruned it."""
    attrs = storage.get_trial_system_attrs(trial_id)
    if attrs.get(PRUNED_KEY):
        raise optuna.TrialPruned(f"pruned at step {attrs.get(STEP_KEY)}")
