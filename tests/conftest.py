"""Suite-wide test settings: offline, runs in a temporary working directory, tiny models."""

from __future__ import annotations

import pytest

from tests.clip import trained_clip  # noqa: F401  (a session fixture, shared by describe/ and training/)
from tests.factories import save_tiny_stable_diffusion


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No hub: what loads must load from disk, as on the machines this project runs on."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh directory: mlflow.db, mlartifacts/ and runs/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_sd_inpaint(tmp_path_factory):
    """A tiny Stable Diffusion INPAINTING directory (9-channel U-Net), saved with save_pretrained."""
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("sd-inpaint"), in_channels=9)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny text-to-image Stable Diffusion directory (4-channel U-Net)."""
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("sd"), in_channels=4)
