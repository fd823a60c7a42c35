"""Tiny DCGD modules and batches (for the training, sampling and command tests)."""

from __future__ import annotations

from pathlib import Path

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


def fit_tiny_checkpoint(root, steps: int = 2, **overrides) -> Path:
    """A real Lightning checkpoint of a tiny ``DCGDModule`` after ``steps`` steps at 32 px."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from dcgd.data.datamodule import InpaintingDataModule
    from dcgd.describe.base import LabelDescriber

    root = Path(root)
    module = tiny_module(**{"ema_decay": 0.9, **overrides})
    data = InpaintingDataModule(
        size=32, batch_size=2, train_length=4, val_per_bucket=1, describer=LabelDescriber()
    )
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0)
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        callbacks=[checkpoint],
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        accelerator="cpu",
    )
    trainer.fit(module, data)
    return root / "last.ckpt"
