"""Exponential moving average of the U-Net weights, saved inside the checkpoint."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """A frozen copy of ``model`` updated as ``ema ← d·ema + (1−d)·model``.

    The decay warms up as ``min(decay, (1+n)/(10+n))`` (diffusers' EMAModel), so a short run
    is not stuck at its random initialisation. Being an ``nn.Module`` attribute of the
    LightningModule, its weights and step count go into the checkpoint and resume exactly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False).eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [
            p.detach().to(e.dtype) for p, e in zip(model.parameters(), ema_params, strict=True)
        ]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        self.num_updates += 1

    def train(self, mode: bool = True) -> EMA:
        super().train(mode)
        self.model.eval()
        return self
