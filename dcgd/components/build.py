"""The one component builder: U-Net, latent space, text encoder and training schedule.

Training (``DCGDModule``), export and checkpoint loading all get their components here:

- :func:`build_components` from a Stable Diffusion directory / hub id and / or small configs
  (what a ``fit`` config names);
- :func:`component_configs` / :func:`components_from_configs`: the same components as plain
  data (every model config, the tokenizer's files) saved inside a ``.ckpt``, and rebuilt from
  it with no hub, no directory and no training code; the weights then come from the
  checkpoint's state dict (:func:`load_weights`).
"""

from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from dcgd.components.latent_space import LatentSpace, PixelSpace, VAESpace
from dcgd.components.schedulers import train_scheduler
from dcgd.components.text_encoder import TextConditioner
from dcgd.components.tokenizer import load_tokenizer
from dcgd.components.unet import adapt_conv_in, build_unet, load_unet, tiny_unet_config
from dcgd.errors import ConfigError
from dcgd.method.input import check_layout, layout_channels
from dcgd.method.loss import check_prediction_type

# 2: a checkpoint holds its components' configs (1: hyperparameters only, rebuilt by the
# builder from what they name). Written by DCGDModule, read by DCGDPipeline.from_checkpoint.
CHECKPOINT_FORMAT = 2


@dataclass
class Components:
    """What a DCGD model is made of (the EMA copy, a training matter, is not here)."""

    unet: UNet2DConditionModel
    space: LatentSpace
    text: TextConditioner
    schedule: DDPMScheduler  # the training schedule; samplers are derived from it


def build_components(
    pretrained_model: str | None = None,
    unet_config: dict[str, Any] | None = None,
    latent_space: str = "vae",
    vae_config: dict[str, Any] | None = None,
    text_encoder: str | None = None,
    text_encoder_config: dict[str, Any] | None = None,
    layout: str = "paper_mask",
    noise_schedule: dict[str, Any] | None = None,
) -> Components:
    """The components a config names (see ``DCGDModule`` for each argument)."""
    check_layout(layout)
    if latent_space not in ("vae", "pixel"):
        raise ConfigError(f"latent_space must be 'vae' or 'pixel', got {latent_space!r}")
    if pretrained_model is None and (unet_config is None or text_encoder is None):
        raise ConfigError(
            "without pretrained_model, give unet_config (e.g. {} for the tiny default) and "
            "text_encoder (a directory or 'tiny')"
        )
    space = _latent_space(pretrained_model, latent_space, vae_config)
    text = _text_encoder(pretrained_model, text_encoder, text_encoder_config)
    unet = _unet(pretrained_model, unet_config, layout, space.channels, text.hidden_size)
    schedule = train_scheduler(pretrained_model, noise_schedule)
    check_prediction_type(schedule.config.prediction_type)
    return Components(unet, space, text, schedule)


def _latent_space(
    pretrained_model: str | None, latent_space: str, vae_config: dict[str, Any] | None
) -> LatentSpace:
    if latent_space == "pixel":
        return PixelSpace()
    if vae_config is not None:
        return VAESpace(AutoencoderKL(**vae_config))
    if pretrained_model is None:
        raise ConfigError("latent_space: vae needs pretrained_model or vae_config")
    return VAESpace.from_pretrained(pretrained_model)


def _text_encoder(
    pretrained_model: str | None, text_encoder: str | None, config: dict[str, Any] | None
) -> TextConditioner:
    if text_encoder == "tiny":
        return TextConditioner.tiny(**(config or {}))
    return TextConditioner.from_pretrained(text_encoder or pretrained_model)


def _unet(
    pretrained_model: str | None,
    unet_config: dict[str, Any] | None,
    layout: str,
    latent_channels: int,
    text_width: int,
) -> UNet2DConditionModel:
    if unet_config is not None:
        derived = {
            "in_channels": layout_channels(layout, latent_channels),
            "out_channels": latent_channels,
            "cross_attention_dim": text_width,
        }
        clash = {k: v for k, v in unet_config.items() if k in derived and v != derived[k]}
        if clash:
            raise ConfigError(
                f"unet_config sets {clash}, but the layout / latent space / text encoder "
                f"require {derived}; remove those keys, they are derived"
            )
        # The tiny default's block types follow the number of levels the user asks for.
        shape = {k: unet_config[k] for k in ("block_out_channels",) if k in unet_config}
        return build_unet({**tiny_unet_config(**derived, **shape), **unet_config, **derived})
    unet = load_unet(pretrained_model)
    if unet.config.cross_attention_dim != text_width:
        raise ConfigError(
            f"the U-Net attends to {unet.config.cross_attention_dim}-d text states but the "
            f"text encoder gives {text_width}-d; use the matching text encoder"
        )
    return adapt_conv_in(unet, layout, latent_channels)


# --------------------------------------------------------------- inside a checkpoint
def _plain(config_json: str) -> dict[str, Any]:
    """A library config as plain data (what a weights-only checkpoint may hold)."""
    return json.loads(config_json)


def component_configs(components: Components) -> dict[str, Any]:
    """Everything but the weights, as plain data: model configs and the tokenizer's files
    (gzipped bytes: CLIP's vocabulary is 3.6 MB as JSON, 0.6 MB compressed)."""
    with tempfile.TemporaryDirectory() as folder:
        components.text.tokenizer.save_pretrained(folder)
        tokenizer = {p.name: gzip.compress(p.read_bytes()) for p in Path(folder).iterdir()}
    space = components.space
    return {
        "unet": _plain(components.unet.to_json_string()),
        "vae": _plain(space.vae.to_json_string()) if isinstance(space, VAESpace) else None,
        "text_encoder": _plain(components.text.model.config.to_json_string()),
        "tokenizer_files": tokenizer,
        "schedule": _plain(components.schedule.to_json_string()),
    }


def components_from_configs(configs: dict[str, Any]) -> Components:
    """The components :func:`component_configs` describes, with untrained weights."""
    vae = configs.get("vae")
    space: LatentSpace = VAESpace(AutoencoderKL.from_config(vae)) if vae else PixelSpace()
    with tempfile.TemporaryDirectory() as folder:
        for name, data in configs["tokenizer_files"].items():
            (Path(folder) / Path(name).name).write_bytes(gzip.decompress(data))
        tokenizer = load_tokenizer(folder)
    text = TextConditioner(
        CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"])), tokenizer
    )
    unet = UNet2DConditionModel.from_config(configs["unet"])
    return Components(unet, space, text, DDPMScheduler.from_config(configs["schedule"]))


def load_weights(
    components: Components, state_dict: dict[str, torch.Tensor], use_ema: bool = True
) -> Components:
    """Load a ``DCGDModule`` state dict into ``components``: the EMA U-Net when there is
    one and ``use_ema``; every weight must fit (a damaged or foreign file is refused)."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}

    unet_prefix = "ema.model." if use_ema and part("ema.model.") else "unet."
    components.unet.load_state_dict(part(unet_prefix))
    if isinstance(components.space, VAESpace):
        components.space.vae.load_state_dict(part("space.vae."))
    components.text.model.load_state_dict(part("text.model."))
    return components
