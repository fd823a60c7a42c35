"""LightningCLI for ``fit`` / ``validate`` / ``test`` / ``predict``.

Any LightningModule and LightningDataModule can be named by ``class_path`` in the config, so
the same command trains the DCGD U-Net and the CLIP text encoder. Defaults added here: an
MLflow logger (sqlite store), a ``ModelCheckpoint`` under ``<default_root_dir>/checkpoints``
that always keeps ``last.ckpt`` (resume with ``--ckpt_path last``), the resolved config saved
to MLflow, and a summary of where everything went.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from jsonargparse import lazy_instance
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from dcgd.errors import ConfigError
from dcgd.tracking.mlflow import MLflowLogger, SaveConfigToMLflow
from dcgd.tracking.summary import RunSummary


class DCGDCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 0,
                "trainer.logger": lazy_instance(MLflowLogger, experiment_name="dcgd"),
                "trainer.default_root_dir": "runs/dcgd",
            }
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(config.trainer.default_root_dir or ".")
        if config.get("checkpoint") is not None and config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(root / "checkpoints")
        ckpt_path = config.get("ckpt_path")
        if ckpt_path:
            self._resume_mlflow_run(config, ckpt_path)

    def _resume_mlflow_run(self, config, ckpt_path: str) -> None:
        """Continue the checkpoint's MLflow run instead of starting a new one."""
        path = Path(ckpt_path)
        if ckpt_path == "last" and config.get("checkpoint") is not None:
            path = Path(config.checkpoint.dirpath) / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"checkpoint {str(path)!r} does not exist; give an existing .ckpt to --ckpt_path "
                "(or 'last' to resume from <default_root_dir>/checkpoints/last.ckpt)"
            )
        config.ckpt_path = str(path)
        run_id = torch.load(path, map_location="cpu", weights_only=False, mmap=True).get(
            "mlflow_run_id"
        )
        logger = config.trainer.get("logger")
        if run_id and logger is not None and not isinstance(logger, bool):
            init = getattr(logger, "init_args", None)
            if init is not None and "run_id" in init and init.run_id is None:
                init.run_id = run_id


def build_cli(args: list[str] | None = None) -> DCGDCLI:
    return DCGDCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToMLflow,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [RunSummary()]},
        args=args,
        parser_kwargs={"exit_on_error": False},
        auto_configure_optimizers=False,
    )


def run_lightning(command: str, argv: list[str]) -> int:
    from jsonargparse import ArgumentError

    saved = sys.argv
    sys.argv = ["python -m dcgd", command, *argv]  # LightningCLI reads argv; keeps --help's prog
    try:
        build_cli()
    except ArgumentError as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"{message} (see: python -m dcgd {command} --help)") from None
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(run_lightning(sys.argv[1], sys.argv[2:]))
