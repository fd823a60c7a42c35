"""A ``fit`` can be stopped at any moment and lose at most a few minutes of training.

- Every ``save_every_minutes`` of training (5 by default) ``last.ckpt`` is rewritten, so even a
  SIGKILL or a dead node leaves a checkpoint that old at most. Why 5: a hard kill then costs
  at most 5 minutes of compute (2.5 on average), and a save costs milliseconds for the quick
  start; a slow save (the SD-sized model with its Adam and EMA states is ~15 GB, 15-60 s to
  write) pushes the next one to 20 times its duration later, so saving never takes more than
  ~5% of the training time.
- SIGTERM (SLURM preemption, ``scancel``, ``kill``) and the first Ctrl-C (SIGINT) let the
  current training step finish, save ``last.ckpt``, print one line saying where it is and how
  to resume, and end ``fit`` with exit status 143 / 130. The MLflow run is marked KILLED
  (:class:`dcgd.tracking.mlflow.MLflowLogger`); ``--ckpt_path last`` continues it. A second
  Ctrl-C stops at once, without saving.

Checkpoints go to a temporary file beside ``last.ckpt`` that is renamed over it (atomic on a
local filesystem), so a kill during a save leaves the previous ``last.ckpt`` whole.

Several processes (DDP): the decisions to save and to stop are all-reduced every optimizer
step, so every rank saves (the state is gathered from all, rank 0 writes) and stops at the
same step. Lightning's SLURM auto-requeue (SIGUSR1 -> ``hpc_ckpt_<n>.ckpt``) is left as it is.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from fsspec.utils import get_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dcgd.errors import ConfigError

# A save that took s seconds is followed by the next timed one no sooner than this many s.
SLOW_SAVE_FACTOR = 20


class Stopped(SIGTERMException):
    """Ends ``fit`` once the checkpoint is saved. Its code is the shell's exit status for the
    signal (128 + number); as a SIGTERMException, Lightning and the MLflow logger treat it as
    the graceful stop Lightning itself raises on SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class PreemptionCheckpoint(L.Callback):
    """Saves ``last.ckpt`` every few minutes of training and when SIGTERM or Ctrl-C stops it.

    Args:
        save_every_minutes: minutes of training between two saves of ``last.ckpt``, on top of
            the ``checkpoint`` callback's own; ``null`` saves only when stopped by a signal.

    The file is the one the ``checkpoint`` callback (a ``ModelCheckpoint`` with ``save_last``)
    keeps; without such a callback nothing is saved.
    """

    def __init__(self, save_every_minutes: float | None = 5.0) -> None:
        if save_every_minutes is not None and not save_every_minutes > 0:
            raise ConfigError(
                f"preemption.save_every_minutes must be > 0 (or null for no timed saves); "
                f"got {save_every_minutes}"
            )
        self.save_every_minutes = save_every_minutes
        self._fitting = False
        self._signal: int | None = None  # SIGINT once Ctrl-C asked to stop
        self._sigint_installed = False
        self._previous_sigint: Any = None
        self._pid = 0
        self._global_zero = True
        self._last_save = 0.0
        self._save_seconds = 0.0
        self._step_at_batch_start = 0
        # True between two optimizer steps: the loops, weights and data position agree, so the
        # state may be saved and resumed. False inside a step, validation or epoch end.
        self._consistent = False
        self._consistent_before_validation = False

    # ------------------------------------------------------------------ signals
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fitting = True
        self._signal = None
        self._pid = os.getpid()
        self._global_zero = trainer.is_global_zero
        # Installed before the DataLoader workers are forked, so that they inherit it and
        # ignore Ctrl-C (by default they die, and the main process with them).
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)
            self._sigint_installed = True

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a DataLoader worker: the main process decides
            return
        if not self._sigint_installed:
            # Lightning restores the handlers it found when it set up; after fit this one
            # behaves as the one it replaced.
            previous = self._previous_sigint
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt
            return
        if self._signal is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without a checkpoint
        self._signal = signal.SIGINT
        if self._global_zero:  # os.write: print() may be busy in the code this interrupts
            os.write(
                2,
                b"\ndcgd: Ctrl-C: stopping after this training step, with a checkpoint "
                b"(Ctrl-C again: stop now, without one)\n",
            )

    def _restore_sigint(self) -> None:
        if not self._sigint_installed:
            return
        self._sigint_installed = False
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) == self._on_sigint:
                signal.signal(signal.SIGINT, self._previous_sigint)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()
        self._fitting = False

    # ------------------------------------------------------------------ where training stands
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_save = time.monotonic()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._consistent = False
        self._step_at_batch_start = trainer.global_step

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._consistent_before_validation = self._consistent
        self._consistent = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._consistent = self._consistent_before_validation

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Past the epoch's end the data position of the finished epoch would be read as the
        # next one's: no save until the next step.
        self._consistent = False

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        # (pl_module, outputs, batch, batch_idx): Lightning passes them by position; unused.
        if trainer.global_step == self._step_at_batch_start:
            return  # accumulating gradients: not between two optimizer steps
        interval = self._interval()
        due = interval is not None and time.monotonic() - self._last_save >= interval
        stop = self._signal is not None or trainer.received_sigterm
        due, stop = _any_rank(trainer, due, stop)
        if due or stop:
            self._save(trainer)
        self._consistent = True
        if stop:
            raise Stopped(self._signal or signal.SIGTERM)

    def _interval(self) -> float | None:
        if self.save_every_minutes is None:
            return None
        return max(60.0 * self.save_every_minutes, SLOW_SAVE_FACTOR * self._save_seconds)

    # ------------------------------------------------------------------ stopping
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_sigint()
        if not self._fitting or not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        self._fitting = False
        if isinstance(exception, Stopped):
            signum, saved = exception.signum, True  # saved just before it was raised
        elif isinstance(exception, KeyboardInterrupt):
            signum, saved = signal.SIGINT, False  # anywhere, even inside a step: not saved
        else:
            # Lightning's own stop on SIGTERM, raised between steps or inside validation.
            # With several processes not every rank need be here: no collective save.
            signum = signal.SIGTERM
            saved = self._consistent and trainer.world_size == 1 and trainer.global_step > 0
            if saved:
                self._save(trainer)
        if trainer.is_global_zero:
            print(self._stop_line(trainer, signum, saved), file=sys.stderr, flush=True)

    def _stop_line(self, trainer: L.Trainer, signum: int, saved: bool) -> str:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        head = f"dcgd: stopped by {name} at step {trainer.global_step}"
        path = next((Path(c.last_model_path) for c in _last_keepers(trainer)), None)
        if path is None or not path.is_file():
            return f"{head}, before any checkpoint was saved: nothing to resume"
        path = path.resolve()
        if saved:
            return f"{head}; saved {path}; resume with: {_resume_command(path)}"
        return (
            f"{head}; no checkpoint could be saved at this point, the latest is {path}; "
            f"resume with: {_resume_command(path)}"
        )

    # ------------------------------------------------------------------ saving
    def _save(self, trainer: L.Trainer) -> None:
        start = time.monotonic()
        for callback in _last_keepers(trainer):
            path = _last_path(trainer, callback)
            # Before the save: the path is part of the state, and ModelCheckpoint keeps writing
            # its last checkpoint to this file (not to a new last-v1.ckpt beside it).
            callback.last_model_path = str(path)
            save_atomically(trainer, path, callback.save_weights_only)
        self._last_save = time.monotonic()
        self._save_seconds = self._last_save - start


def _last_keepers(trainer: L.Trainer) -> list[ModelCheckpoint]:
    return [
        c
        for c in trainer.checkpoint_callbacks
        if isinstance(c, ModelCheckpoint) and c.save_last and c.dirpath
    ]


def _last_path(trainer: L.Trainer, callback: ModelCheckpoint) -> Path:
    """The file ``callback`` keeps its last checkpoint in: the one it already wrote (or the
    resumed checkpoint's), else ``last.ckpt``, or ``last-v<n>.ckpt`` as Lightning names it
    when a previous run left a ``last.ckpt`` there."""
    if callback.last_model_path:
        return Path(callback.last_model_path)
    metrics = {"epoch": trainer.current_epoch, "step": trainer.global_step}
    name = callback.format_checkpoint_name(metrics, callback.CHECKPOINT_NAME_LAST)
    version = callback.STARTING_VERSION
    while callback.file_exists(name, trainer):
        name = callback.format_checkpoint_name(metrics, callback.CHECKPOINT_NAME_LAST, ver=version)
        version += 1
    return Path(name)


def save_atomically(trainer: L.Trainer, path: Path, weights_only: bool = False) -> None:
    """``trainer.save_checkpoint(path)`` that never leaves a partial ``path``: a temporary file
    in the same directory, flushed to disk, then renamed over it.

    Lightning's own writes go through a temporary file in $TMPDIR that is *moved* into place,
    which is a copy (not atomic) when $TMPDIR is on another filesystem, as on most clusters.
    Called on every rank (the state is gathered from all); rank 0 writes.
    """
    if get_protocol(str(path)) != "file":  # object stores replace a whole object at once
        trainer.save_checkpoint(path, weights_only)
        return
    temporary = path.with_name(f".{path.name}.tmp")  # not a *.ckpt: no 'last' lookup sees it
    trainer.save_checkpoint(temporary, weights_only)
    if trainer.is_global_zero:
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)


def _any_rank(trainer: L.Trainer, *flags: bool) -> tuple[bool, ...]:
    """Each flag, true if true on any rank (one all-reduce; nothing with one process)."""
    if trainer.world_size == 1:
        return flags
    tensor = torch.tensor(flags, dtype=torch.float32, device=trainer.strategy.root_device)
    return tuple(bool(v > 0) for v in trainer.strategy.reduce(tensor, reduce_op="sum").tolist())


def _resume_command(path: Path) -> str:
    """The command line of this run (``python -m dcgd fit ...``) with ``--ckpt_path`` set to
    ``last`` (what the CLI resolves to ``<checkpoint dir>/last.ckpt``) or to ``path``."""
    words, skip = [], False
    for word in sys.argv[1:]:
        if skip:
            skip = False
        elif word == "--ckpt_path":
            skip = True
        elif not word.startswith("--ckpt_path="):
            words.append(word)
    target = "last" if path.name == "last.ckpt" else str(path)
    return " ".join([sys.argv[0], shlex.join(words), "--ckpt_path", shlex.quote(target)])
