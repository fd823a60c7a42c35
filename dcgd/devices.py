"""Which torch device a command runs on: ``auto`` (a GPU when there is one), or a name."""

from __future__ import annotations

import torch

from dcgd.errors import ConfigError, one_line


def resolve_device(name: str | None = "auto", option: str = "--device") -> torch.device:
    """``auto`` / ``None``: ``cuda`` when a GPU is visible, else ``cpu``; otherwise ``name``,
    checked to be a device that exists here (a typo, or ``cuda`` on a machine without one, is
    one line naming ``option``, not a traceback deep inside the first tensor op)."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ConfigError(
            f"{option} {name!r} is not a torch device ({one_line(err)}); use cpu or cuda[:N]"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{option} {name}: no CUDA device is available here; use {option} cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{option} {name}: this machine has {count} CUDA device(s)")
        return device
    try:
        torch.empty(0, device=device)
    except (RuntimeError, ValueError) as err:
        message = one_line(str(err).strip().splitlines()[0] if str(err).strip() else err)
        raise ConfigError(f"{option} {name} cannot be used here ({message}); use cpu") from None
    return device
