"""Fixtures of the evaluation tests: real photographs, real masks, a local LPIPS backbone.

The LPIPS backbone is a SEEDED RANDOM torchvision network saved under the torchvision file
name in a temporary torch hub folder: it tests the loading path and the wiring against the
``lpips`` package on the same weights. Its numbers are not LPIPS and are never reported.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
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


@pytest.fixture(scope="session")
def photos() -> torch.Tensor:
    return to_batch([photo(n) for n in PHOTOS])


@pytest.fixture(scope="session")
def masks() -> torch.Tensor:
    """One real stroke/box mask per photo, from the project's seeded generator, in every bucket."""
    out = [
        eval_mask(i, seed=0, size=(64, 64), bucket=PAPER_BUCKETS[i % 4], settings=MaskSettings())
        for i in range(len(PHOTOS))
    ]
    return torch.from_numpy(np.stack(out)).float()[:, None]


def _save_backbone(path, net: str, seed: int) -> None:
    """A seeded random torchvision backbone at ``path``. The classifier (unused by LPIPS,
    but loaded by torchvision) is stored as a stride-0 view of one zero to keep files small."""
    import torchvision

    build = torchvision.models.alexnet if net == "alex" else torchvision.models.vgg16
    with torch.device("meta"):  # shapes only: no time spent initialising the classifier
        shapes = {k: v.shape for k, v in build().state_dict().items()}
    torch.manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.startswith("features") and len(shape) == 1:  # bias
            state[key] = torch.randn(shape) * 0.01
        elif key.startswith("features"):  # He initialisation of a convolution
            state[key] = torch.randn(shape) * (2.0 / shape[1:].numel()) ** 0.5
        else:
            state[key] = torch.zeros(1).expand(shape)
    torch.save(state, path)


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds seeded random alex and vgg backbones."""
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for net, url in LPIPS_BACKBONE_URLS.items():
        _save_backbone(folder / url.rsplit("/", 1)[1], net, seed=1234)
    return home


@pytest.fixture
def with_backbones(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    return tmp_path / "empty"
