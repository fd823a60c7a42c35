"""Test data of the evaluation tests, importable from other test folders.

- real photographs (scikit-image) cropped to a size, and real masks from the project's
  seeded generator (``dcgd.data.masks.eval_mask``), one per bucket;
- seeded RANDOM torchvision backbones saved under the torchvision file names, for testing
  the LPIPS loading path and wiring against the ``lpips`` package on the same weights.
  Their numbers are not LPIPS and are never reported;
- a quiet one-CPU Lightning trainer that runs a callback (``TableOneCallback``) under ``root``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from skimage import data as skdata

from dcgd.data.buckets import PAPER_BUCKETS
from dcgd.data.masks import MaskSettings, eval_mask
from dcgd.eval.metrics import LPIPS_BACKBONE_URLS

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo(name: str, size: int = 64) -> np.ndarray:
    """A scikit-image photograph, centre-cropped and resized to ``size``, uint8 ``[H,W,3]``."""
    image = getattr(skdata, name)()
    h, w = image.shape[:2]
    side = min(h, w)
    image = image[(h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2]
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 ``[H,W,3]`` images -> ``[B,3,H,W]`` in [-1,1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def photo_batch(size: int) -> torch.Tensor:
    return to_batch([photo(n, size) for n in PHOTOS])


def mask_batch(size: int, count: int = len(PHOTOS), seed: int = 0) -> torch.Tensor:
    """``count`` real stroke/box masks ``[B,1,H,W]``, cycling through the paper's buckets."""
    out = [
        eval_mask(i, seed, (size, size), PAPER_BUCKETS[i % 4], MaskSettings()) for i in range(count)
    ]
    return torch.from_numpy(np.stack(out)).float()[:, None]


def save_backbone(path: Path, net: str, seed: int) -> None:
    """A seeded random torchvision backbone at ``path``. The classifier (unused by LPIPS,
    but loaded by torchvision) is stored as a stride-0 view of one zero to keep files small."""
    import torchvision

    build = torchvision.models.alexnet if net == "alex" else torchvision.models.vgg16
    with torch.device("meta"):  # shapes only: no time spent initialising the classifier
        shapes = {k: v.shape for k, v in build().state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.startswith("features") and len(shape) == 1:  # bias
            state[key] = torch.randn(shape, generator=generator) * 0.01
        elif key.startswith("features"):  # He initialisation of a convolution
            state[key] = torch.randn(shape, generator=generator) * (2.0 / shape[1:].numel()) ** 0.5
        else:
            state[key] = torch.zeros(1).expand(shape)
    torch.save(state, path)


def save_backbones(folder: Path, nets: tuple[str, ...] = ("alex", "vgg"), seed: int = 1234) -> Path:
    """Seeded random backbones under torchvision's file names in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for net in nets:
        save_backbone(folder / LPIPS_BACKBONE_URLS[net].rsplit("/", 1)[1], net, seed)
    return folder


def table_trainer(callback: L.Callback, root: Path) -> L.Trainer:
    """A one-CPU trainer with ``callback``, writing under ``root``, no logger or progress bar."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[callback],
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
