"""Image grids: one row per sample, columns source | mask | result | target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[B,C,H,W]`` in [-1,1] (or a ``[B,1,H,W]`` mask in {0,1}) to ``[B,H,W,3]`` uint8."""
    images = images.detach().float().cpu()
    if images.shape[1] == 1:  # a mask: white = remove
        images = images.expand(-1, 3, -1, -1) * 2 - 1
    array = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).numpy()


def image_grid(columns: list[torch.Tensor], pad: int = 2) -> Image.Image:
    """Tile equally sized batches side by side; row i shows sample i of every column."""
    tiles = [to_uint8(c) for c in columns]
    rows, height, width, _ = tiles[0].shape
    grid = np.full(
        (rows * (height + pad) + pad, len(tiles) * (width + pad) + pad, 3), 255, dtype=np.uint8
    )
    for col, tile in enumerate(tiles):
        for row in range(rows):
            y, x = pad + row * (height + pad), pad + col * (width + pad)
            grid[y : y + height, x : x + width] = tile[row]
    return Image.fromarray(grid)


def removal_grid(batch: dict[str, Any], result: torch.Tensor, count: int) -> Image.Image:
    n = min(count, result.shape[0])
    columns = [batch["source"][:n], batch["mask"][:n], result[:n], batch["target"][:n]]
    return image_grid(columns)


def log_validation_grid(
    module: Any, batch: dict[str, Any], result: torch.Tensor, count: int
) -> None:
    """Log ``source | mask | result | target`` to MLflow (or beside the checkpoints)."""
    if module.trainer is None or not module.trainer.is_global_zero or count <= 0:
        return
    grid = removal_grid(batch, result, count)
    name = f"grids/val_step{module.global_step:07d}.png"
    from dcgd.tracking.mlflow import log_image

    if not log_image(module.logger, grid, name):
        path = Path(module.trainer.default_root_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
