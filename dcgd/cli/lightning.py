"""LightningCLI for ``fit`` / ``validate`` / ``test`` / ``predict``.

Any LightningModule and LightningDataModule can be named by ``class_path`` in the config, so
the same command trains the DCGD U-Net and the CLIP text encoder. Defaults added here: an
MLflow logger (sqlite store), a ``ModelCheckpoint`` under ``<default_root_dir>/checkpoints``
that always keeps ``last.ckpt`` (resume with ``--ckpt_path last``), ``last.ckpt`` also saved
every few minutes and on SIGTERM / Ctrl-C (``--preemption.save_every_minutes``), the resolved
config saved to MLflow, and a summary of where everything went.
"""

from __future__ import annotations

import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace, lazy_instance
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dcgd.checkpoints import load_checkpoint
from dcgd.data.datamodule import SkippedFilesReport
from dcgd.errors import ConfigError, user_error_behind
from dcgd.eval.table_callback import TableOneCallback
from dcgd.moved import moved_hint
from dcgd.tracking.mlflow import MLflowLogger, RememberMLflowRun, SaveConfigToMLflow
from dcgd.tracking.summary import RunSummary
from dcgd.training.preemption import PreemptionCheckpoint
from dcgd.training.progress_bar import progress_bar


class DCGDCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # Its own callback: ModelCheckpoint takes one of every_n_train_steps / every_n_epochs /
        # train_time_interval, and configs set every_n_train_steps.
        parser.add_lightning_class_args(PreemptionCheckpoint, "preemption")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 0,
                "trainer.logger": lazy_instance(MLflowLogger, experiment_name="dcgd"),
                "trainer.default_root_dir": "runs/dcgd",
            }
        )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        # dcgd's progress bar, unless the run turned bars off or brought its own.
        given = [*callbacks, *(config.get("callbacks") or [])]
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in given
        ):
            callbacks = [*callbacks, progress_bar()]
        return super()._instantiate_trainer(config, callbacks)

    def _parse_ckpt_path(self) -> None:
        """Read --ckpt_path through dcgd's safe reader before Lightning reads its settings: a
        file that would run code, or a damaged one, stops here with one line."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        if config.get("ckpt_path"):
            load_checkpoint(self._checkpoint_file(config, config.ckpt_path))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(config.trainer.default_root_dir or ".")
        if config.get("checkpoint") is not None and config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(root / "checkpoints")
        if "weights_only" in config:  # Lightning's own load of the file: tensors and data only
            config.weights_only = True
        ckpt_path = config.get("ckpt_path")
        if ckpt_path:
            config.ckpt_path = str(self._checkpoint_file(config, ckpt_path))
            self._resume_mlflow_run(config, Path(config.ckpt_path))
        elif hpc := hpc_checkpoint(root):
            # A requeued SLURM job: Lightning resumes from this file by itself; log to its run.
            self._resume_mlflow_run(config, hpc)

    @staticmethod
    def _checkpoint_file(config: Namespace, ckpt_path: str) -> Path:
        path = Path(ckpt_path)
        if ckpt_path == "last" and config.get("checkpoint") is not None:
            root = Path(config.trainer.default_root_dir or ".")
            path = Path(config.checkpoint.dirpath or root / "checkpoints") / "last.ckpt"
        if not path.is_file():
            state = "is a folder" if path.is_dir() else "does not exist"
            raise ConfigError(
                f"checkpoint {str(path)!r} {state}; give an existing .ckpt to --ckpt_path "
                "(or 'last' to resume from <default_root_dir>/checkpoints/last.ckpt)"
            )
        return path

    @staticmethod
    def _resume_mlflow_run(config: Namespace, path: Path) -> None:
        """Continue the checkpoint's MLflow run instead of starting a new one."""
        run_id = load_checkpoint(path).get("mlflow_run_id")
        logger = config.trainer.get("logger")
        if run_id and logger is not None and not isinstance(logger, bool):
            init = getattr(logger, "init_args", None)
            if init is not None and "run_id" in init and init.run_id is None:
                init.run_id = run_id


def hpc_checkpoint(root: Path) -> Path | None:
    """The checkpoint Lightning resumes a requeued SLURM job from (``hpc_ckpt_<n>.ckpt``, the
    highest n in ``default_root_dir``), if any."""
    found = [(int(m[1]), p) for p in root.glob("hpc_ckpt_*.ckpt") if (m := _HPC.match(p.name))]
    return max(found)[1] if found else None


_HPC = re.compile(r"hpc_ckpt_(\d+)\.ckpt$")


def build_cli(args: list[str] | None = None) -> DCGDCLI:
    return DCGDCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToMLflow,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "callbacks": [
                RunSummary(),
                RememberMLflowRun(),
                SkippedFilesReport(),
                TableOneCallback(),
            ]
        },
        args=args,
        parser_kwargs={"exit_on_error": False},
        auto_configure_optimizers=False,
    )


# jsonargparse's messages for a class given by class_path, reduced to what the user typed.
_NOT_ACCEPTED = re.compile(
    r'Parser key "(?P<group>[\w.]+)".*?class_path \'(?P<cls>[\w.]+)\': '
    r"Option '(?P<key>[\w.]+)' is not accepted"
)
_BAD_VALUE = re.compile(
    r'Parser key "(?P<group>[\w.]+)".*?class_path \'(?P<cls>[\w.]+)\': '
    r'Parser key "(?P<key>[\w.]+)": (?P<why>.*?) - Expected a <class \'NoneType\'>'
)


def config_error_message(message: str, command: str) -> str:
    """One readable line for a jsonargparse error."""
    message = " ".join(message.split())
    hint = f"(see: python -m dcgd {command} --help, or --print_config for the resolved config)"
    if moved := moved_hint(message):  # a config written before the layout changed
        return f"{moved} {hint}"
    if match := _NOT_ACCEPTED.search(message):
        cls = match["cls"].rsplit(".", 1)[1]
        return (
            f"unknown config key {match['group']}.init_args.{match['key']}: {cls} has no "
            f"argument {match['key']!r} {hint}"
        )
    if match := re.search(r'Parser key "config": File does not exist: (.*)', message):
        return f"config file {match[1]} does not exist; give the path of a YAML config {hint}"
    if match := _BAD_VALUE.search(message):
        return f"bad value for {match['group']}.init_args.{match['key']}: {match['why']} {hint}"
    return f"{message} {hint}"


# Warnings a dcgd run always raises and nobody can act on: the frozen parts (VAE, EMA copy,
# CLIP) are in eval mode on purpose; the pytree one is Lightning's own use of a torch API.
QUIET_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def exit_status(exit_: SystemExit) -> int:
    """The process's exit status for the SystemExit that ended a Lightning command."""
    if isinstance(exit_, SIGTERMException) and exit_.code is None:
        return 128 + signal.SIGTERM  # Lightning's graceful stop on SIGTERM says nothing: 143
    if isinstance(exit_.__context__, KeyboardInterrupt):
        return 128 + signal.SIGINT  # Lightning's sys.exit(1) after a Ctrl-C: 130
    return int(exit_.code or 0)


def run_lightning(command: str, argv: list[str]) -> int:
    from jsonargparse import ArgumentError

    saved = sys.argv
    sys.argv = ["python -m dcgd", command, *argv]  # LightningCLI reads argv; keeps --help's prog
    try:
        with warnings.catch_warnings():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            build_cli()
    except SystemExit as exit_:
        return exit_status(exit_)
    except Exception as err:
        user = user_error_behind(err)
        if user is not None:
            raise user from None
        if isinstance(err, ArgumentError):
            raise ConfigError(config_error_message(str(err), command)) from None
        raise
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(run_lightning(sys.argv[1], sys.argv[2:]))
