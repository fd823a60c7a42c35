"""The ``data:`` section of a fit config, instantiated outside ``fit`` (describe, sweeps)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dcgd.errors import ConfigError, one_line, user_error_behind
from dcgd.moved import moved_hint

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule


def build_datamodule(
    data: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    where: str = "data section",
) -> LightningDataModule:
    """Instantiate ``data`` (``{class_path, init_args}``) as LightningCLI does: jsonargparse,
    nested class_paths (the describer) included; ``overrides`` replace entries of its init_args.

    An invalid section is a one-line :class:`ConfigError` starting with ``where``; an error the
    data module itself raises for the user (a missing root or vocabulary file) is that error,
    unwrapped; anything else is a bug and keeps its traceback.
    """
    from jsonargparse import ArgumentError, ArgumentParser
    from lightning.pytorch import LightningDataModule

    if overrides:
        data = {**data, "init_args": {**(data.get("init_args") or {}), **overrides}}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    try:
        config = parser.parse_object({"data": data})
    except ArgumentError as err:
        raise ConfigError(f"{where}: {moved_hint(str(err)) or one_line(err)}") from None
    # jsonargparse >= 4.49 names it instantiate; older releases instantiate_classes.
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    try:
        return instantiate(config).data
    except Exception as err:
        # jsonargparse wraps what a class raises in ValueErrors about union types.
        cause = user_error_behind(err)
        if cause is None:
            raise
        raise cause from None
