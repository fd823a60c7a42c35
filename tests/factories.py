"""Tiny components built offline from configs, and saved the way users' checkpoints are.

``save_tiny_stable_diffusion`` writes a directory in the Stable Diffusion (inpainting) layout
(``unet/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json``) with
``save_pretrained``, so the tests load it through the same ``from_pretrained`` path a user's
hub id or local directory takes. The tokenizer is CLIP's real BPE (open_clip ships it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from dcgd.components.latent_space import tiny_vae_config
from dcgd.components.schedulers import DEFAULT_TRAIN_SCHEDULE
from dcgd.components.text_encoder import TextConditioner
from dcgd.components.unet import tiny_unet_config
from dcgd.method.input import layout_channels

TEXT_WIDTH = 32
LATENT_CHANNELS = 4


def tiny_text(seed: int = 0) -> TextConditioner:
    return TextConditioner.tiny(hidden_size=TEXT_WIDTH, seed=seed)


def tiny_unet(in_channels: int, out_channels: int = LATENT_CHANNELS, seed: int = 0):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        **tiny_unet_config(in_channels, out_channels, TEXT_WIDTH, sample_size=16)
    )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(**tiny_vae_config(LATENT_CHANNELS))


def save_tiny_stable_diffusion(directory: str | Path, in_channels: int = 9, seed: int = 0) -> Path:
    """A tiny SD directory: ``in_channels`` 9 is SD-inpainting, 4 text-to-image SD."""
    directory = Path(directory)
    with torch.random.fork_rng():
        tiny_unet(in_channels, seed=seed).save_pretrained(directory / "unet")
        tiny_vae(seed=seed).save_pretrained(directory / "vae")
        tiny_text(seed=seed).save_pretrained(directory)
    DDPMScheduler(**DEFAULT_TRAIN_SCHEDULE).save_pretrained(directory / "scheduler")
    pipeline = "StableDiffusionInpaintPipeline" if in_channels == 9 else "StableDiffusionPipeline"
    index = {
        "_class_name": pipeline,
        "_diffusers_version": "0.42.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
    }
    (directory / "model_index.json").write_text(json.dumps(index, indent=2))
    return directory


def layout_width(layout: str) -> int:
    return layout_channels(layout, LATENT_CHANNELS)
