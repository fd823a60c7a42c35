"""Where diffusion happens: a VAE's latent space (the paper, Stable Diffusion) or pixels.

Both expose the same three calls, so the training module and the sampler never branch on it.
Pixel space is for tiny runs (the quick start, tests) where a random VAE would make every
image meaningless.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from dcgd.components.loading import diffusers_kwargs, from_pretrained
from dcgd.method.randomness import Generators


class LatentSpace(nn.Module):
    """``encode(x) == latents(posterior(x))``; subclasses define ``posterior``, ``latents``
    and ``decode`` (identities here)."""

    channels: int
    downsample: int

    @torch.no_grad()
    def encode(
        self, images: torch.Tensor, sample: bool = False, generator: Generators = None
    ) -> torch.Tensor:
        """Latents of ``images``; ``sample`` draws from the posterior with ``generator`` (one,
        or one per sample: so a resumed run draws what the uninterrupted one did), else its
        mode."""
        return self.latents(self.posterior(images), sample, generator)

    def posterior(self, images: torch.Tensor) -> torch.Tensor:
        """What the encoder computes from ``images``, before any sampling (cacheable)."""
        return images

    def latents(
        self, posterior: torch.Tensor, sample: bool = False, generator: Generators = None
    ) -> torch.Tensor:
        """Latents from a :meth:`posterior`."""
        return posterior

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


class PixelSpace(LatentSpace):
    """Identity: the diffusion runs on RGB in [-1,1]."""

    def __init__(self) -> None:
        super().__init__()
        self.channels = 3
        self.downsample = 1


class VAESpace(LatentSpace):
    """A frozen ``AutoencoderKL``; latents scaled by its ``scaling_factor`` (and shift)."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        self.channels = vae.config.latent_channels
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scale = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def train(self, mode: bool = True) -> VAESpace:
        super().train(mode)
        self.vae.eval()  # frozen: never in train mode
        return self

    @torch.no_grad()
    def posterior(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's Gaussian: mean and log-variance stacked, ``[B, 2C, h, w]``."""
        return self.vae.encode(images.to(self.vae.dtype)).latent_dist.parameters

    def latents(
        self, posterior: torch.Tensor, sample: bool = False, generator: Generators = None
    ) -> torch.Tensor:
        dist = DiagonalGaussianDistribution(posterior)
        latents = dist.sample(generator) if sample else dist.mode()
        return (latents - self.shift) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents / self.scale + self.shift
        return self.vae.decode(latents.to(self.vae.dtype)).sample.clamp(-1, 1)

    @classmethod
    def from_pretrained(cls, path_or_id: str, subfolder: str | None = "vae") -> VAESpace:
        vae = from_pretrained(AutoencoderKL, path_or_id, subfolder, "a VAE", **diffusers_kwargs())
        return cls(vae)


def tiny_vae_config(latent_channels: int = 4) -> dict:
    """A two-level ``AutoencoderKL`` (downsample 2) for tests."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "block_out_channels": [16, 32],
        "layers_per_block": 1,
        "latent_channels": latent_channels,
        "norm_num_groups": 8,
        "sample_size": 32,
    }
