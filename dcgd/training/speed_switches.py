"""Speed switches of the U-Net: each changes how fast, never what is computed (up to float
rounding). ``dcgd.benchmarks.switches`` times each against the default."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel

from dcgd.components.attention import ATTENTION, set_attention
from dcgd.components.latent_space import LatentSpace, VAESpace
from dcgd.errors import ConfigError


def apply_speed_switches(
    unet: UNet2DConditionModel,
    space: LatentSpace,
    attention: str = "sdpa",
    channels_last: bool = False,
    gradient_checkpointing: bool = False,
) -> None:
    """Set before the EMA copy is made, so that it runs the same way."""
    if attention not in ATTENTION:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
    set_attention(unet, attention)
    if isinstance(space, VAESpace):
        set_attention(space.vae, attention)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()


def check_compile(compile_unet: bool, compile_options: dict[str, Any] | None) -> None:
    if compile_options is not None and not compile_unet:
        raise ConfigError("compile_options are given but compile_unet is false; set both")
