"""Adam / AdamW, fused into one kernel per step where PyTorch supports it."""

from __future__ import annotations

import warnings
from typing import Any

import torch


def adam(
    groups: list[dict[str, Any]], lr: float, weight_decay: float, fused: bool
) -> torch.optim.Optimizer:
    """Adam (the paper) when ``weight_decay`` is 0, else AdamW; ``fused`` asks for PyTorch's
    fused kernel and falls back to the default (foreach) one, with a warning, where the
    parameters' device or dtype has none."""
    cls = torch.optim.Adam if weight_decay == 0 else torch.optim.AdamW
    kwargs = {"lr": lr} if weight_decay == 0 else {"lr": lr, "weight_decay": weight_decay}
    if fused:
        try:
            return cls(groups, fused=True, **kwargs)
        except RuntimeError as err:
            warnings.warn(
                f"fused_optimizer: PyTorch has no fused {cls.__name__} for these parameters "
                f"({err}); using the default implementation",
                stacklevel=2,
            )
    return cls(groups, **kwargs)
