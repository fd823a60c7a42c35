"""Adam / AdamW, fused into one kernel per step where PyTorch supports it."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch

from dcgd.validation import finite


def check_optimisation(
    lr: float, text_lr: float | None, weight_decay: float, ema_decay: float | None
) -> None:
    """Before any model loads: a NaN or zero learning rate, or an EMA decay of 1 (weights
    that never move), would otherwise train for hours to nothing."""
    finite("lr", lr, 0, low_open=True)
    if text_lr is not None:
        finite("text_lr", text_lr, 0, low_open=True)
    finite("weight_decay", weight_decay, 0)
    if ema_decay is not None:
        finite("ema_decay", ema_decay, 0, 1, high_open=True)


def adam(
    groups: list[dict[str, Any]], lr: float, weight_decay: float, fused: bool
) -> torch.optim.Optimizer:
    """Adam (the paper) when ``weight_decay`` is 0, else AdamW; ``fused`` asks for PyTorch's
    fused kernel and falls back to the default (foreach) one, with a warning, where the
    parameters' device or dtype has none."""
    cls = torch.optim.Adam if weight_decay == 0 else torch.optim.AdamW
    kwargs = {"lr": lr} if weight_decay == 0 else {"lr": lr, "weight_decay": weight_decay}
    if fused:
        # PyTorch checks the parameters only at the first step: check here, while we can
        # still choose.
        unsupported = _unfused(p for group in groups for p in group["params"])
        if not unsupported:
            return cls(groups, fused=True, **kwargs)
        warnings.warn(
            f"fused_optimizer: PyTorch has no fused {cls.__name__} for parameters of "
            f"{', '.join(sorted(unsupported))}; using the default implementation",
            stacklevel=2,
        )
    return cls(groups, **kwargs)


def _unfused(params: Iterable[torch.Tensor]) -> set[str]:
    """``device dtype`` of the parameters PyTorch's fused kernels do not take."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a private helper: if it moves, let PyTorch decide at the first step
        return set()
    return {
        f"{p.device.type} {p.dtype}"
        for p in params
        if p.device.type not in devices or not torch.is_floating_point(p)
    }
