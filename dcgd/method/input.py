"""Eq. 5: what the U-Net sees, ``x'_t = z_t ⊕ [m] ⊕ E(s∘o) ⊕ E(s∘(1−o))``, and the composite.

A layout is an ordered list of named channel groups. Naming the groups (not just counting
channels) is what lets :func:`dcgd.components.unet.adapt_conv_in` map a pretrained ``conv_in``
onto a new layout: Stable Diffusion inpainting's ``[latent, mask, context]`` weights land on
the same groups of ``paper_mask``, and only the ``object`` group starts at zero.

The condition images come from the SOURCE only and are encoded the same way in training and
sampling (:func:`encode_conditions`); the output keeps every pixel outside the mask
(:func:`composite`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from dcgd.errors import ConfigError, DataError

LayoutName = Literal["paper", "paper_mask", "inpaint"]

LAYOUTS: dict[str, tuple[str, ...]] = {
    # [z_t, E(s∘o), E(s∘(1−o))]: the paper's eq. 5.
    "paper": ("latent", "object", "context"),
    # [z_t, m, E(s∘o), E(s∘(1−o))]: eq. 5 plus the mask, so the net knows where to fill.
    "paper_mask": ("latent", "mask", "object", "context"),
    # [z_t, m, E(s∘(1−o))]: Stable Diffusion inpainting; the ablation without the object.
    "inpaint": ("latent", "mask", "context"),
}

# Layouts of pretrained checkpoints, recognised by their conv_in width.
PRETRAINED_LAYOUTS: dict[int, tuple[str, ...]] = {
    4: ("latent",),  # text-to-image Stable Diffusion
    9: LAYOUTS["inpaint"],  # Stable Diffusion inpainting
}


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return layout


def group_channels(group: str, latent_channels: int) -> int:
    return 1 if group == "mask" else latent_channels


def layout_channels(layout: str, latent_channels: int) -> int:
    return sum(group_channels(g, latent_channels) for g in LAYOUTS[layout])


def condition_images(source: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The two images eq. 5 encodes, from the SOURCE only (never the target).

    ``object = s∘o`` (what to remove) and ``context = s∘(1−o)`` (what to keep); the hidden part
    is 0, mid-grey in [-1,1], as Stable Diffusion inpainting's masked image.
    """
    return {"object": source * mask, "context": source * (1.0 - mask)}


def encode_conditions(
    layout: str,
    source: torch.Tensor,
    mask: torch.Tensor,
    encode: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Latents ``E(·)`` of the condition images ``layout`` uses (``object``, ``context``).

    ``encode`` is the latent space's encoder (training passes it through its encoding cache)."""
    images = condition_images(source, mask)
    return {g: encode(images[g]) for g in LAYOUTS[layout] if g in images}


def latent_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask at latent resolution (nearest, as diffusers' inpainting pipeline)."""
    if mask.shape[-2:] == size:
        return mask
    return F.interpolate(mask, size=size, mode="nearest")


def assemble(
    layout: str,
    noisy_latents: torch.Tensor,
    mask: torch.Tensor,
    condition_latents: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Concatenate the groups of ``layout`` along channels: the U-Net input ``x'_t``."""
    parts = {
        "latent": noisy_latents,
        "mask": latent_mask(mask, noisy_latents.shape[-2:]).to(noisy_latents.dtype),
        **condition_latents,
    }
    return torch.cat([parts[g] for g in LAYOUTS[layout]], dim=1)


def composite(pred: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``ŷ = o·pred + (1−o)·s``: outside the mask the result is the source, exactly.

    ``pred`` is clamped to ``[-1,1]`` first, as it would be when saved as an image (a VAE
    decoder overshoots). Diffusers' inpainting pipeline does not paste the known region back.
    """
    if pred.shape != source.shape:
        raise DataError(f"pred {tuple(pred.shape)} and source {tuple(source.shape)} differ")
    if mask.shape[-2:] != pred.shape[-2:]:
        raise DataError(f"mask {tuple(mask.shape)} and images {tuple(pred.shape)} differ in size")
    return mask * pred.clamp(-1.0, 1.0) + (1.0 - mask) * source
