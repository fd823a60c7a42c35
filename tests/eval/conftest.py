"""Fixtures of the evaluation tests: real photographs, real masks, local LPIPS backbones.

The LPIPS backbones are SEEDED RANDOM torchvision networks saved under the torchvision file
names in a temporary torch hub folder (``tests/eval/helpers.py``): they test the loading path
and the wiring against the ``lpips`` package on the same weights. Their numbers are not LPIPS.
"""

from __future__ import annotations

import pytest
import torch

from dcgd.eval import metrics
from tests.eval.helpers import mask_batch, photo_batch, save_backbones


@pytest.fixture(scope="session")
def photos() -> torch.Tensor:
    return photo_batch(64)


@pytest.fixture(scope="session")
def masks() -> torch.Tensor:
    """One real stroke/box mask per photo, from the project's seeded generator, in every bucket."""
    return mask_batch(64)


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds seeded random alex and vgg backbones."""
    home = tmp_path_factory.mktemp("torch_home")
    save_backbones(home / "hub" / "checkpoints")
    return home


@pytest.fixture
def with_backbones(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    return tmp_path / "empty"


@pytest.fixture(autouse=True)
def _fresh_left_out():
    """Each test sees its own record of left-out metrics (it is per process otherwise), so a
    metric left out in one test is warned about again in the next."""
    metrics.LEFT_OUT.clear()
    yield
    metrics.LEFT_OUT.clear()
