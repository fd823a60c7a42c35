"""Tiny DCGD modules and batches (for the training, sampling and command tests)."""

from __future__ import annotations

import torch

from dcgd.training.module import DCGDModule

TINY = {
    "latent_space": "pixel",
    "unet_config": {"block_out_channels": [8, 16]},
    "text_encoder": "tiny",
    "text_encoder_config": {"hidden_size": 16},
    "ema_decay": None,
    "val_steps": 2,
}


def tiny_module(**overrides) -> DCGDModule:
    torch.manual_seed(0)
    return DCGDModule(**{**TINY, **overrides})


def make_batch(size: int = 16, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, size, size, generator=gen) * 2 - 1
    mask = torch.zeros(2, 1, size, size)
    mask[0, :, 2:9, 3:12] = 1
    mask[1, :, 6:14, 1:7] = 1
    # A paste pair (an object in the hole of sample 0) and a hole pair (zero in the hole).
    source = target * (1 - mask)
    source[0] = torch.where(mask[0] > 0, torch.full_like(target[0], 0.8), target[0])
    return {
        "source": source,
        "target": target,
        "mask": mask,
        "t_info": ["a kitchen", "a street with trees"],
        "t_mask": ["a cat", "a car"],
        "id": ["a", "b"],
    }
