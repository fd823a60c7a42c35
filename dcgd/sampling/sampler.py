"""The DCGD sampler: eq. 5 input, eq. 6 guidance at every step, known region pasted back.

The known region (outside the mask) is not the model's to invent: with ``known_region:
"replace"`` (the default) the latent there is reset, before every step, to the source
noised to that step's level (RePaint's replacement, without its resampling), so the
U-Net always sees there what training showed it, a forward-noised clean image, and the
hole is drawn against the true surroundings. ``"free"`` leaves the whole latent to the
model (the known region then steers the fill only through the eq. 5 context channel).

Deterministic for a seed, per sample: each sample's starting noise comes from a generator
seeded by (seed, sample id), so a result does not depend on the batch it ran in, the batch
size or the DDP rank.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from dcgd.components.latent_space import LatentSpace
from dcgd.components.text_encoder import TextConditioner
from dcgd.method.guidance import guided_noise, select_prompts
from dcgd.method.input import LAYOUTS, assemble, condition_images


def sample_seed(seed: int, sample_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(sample_id.encode())) % (2**63)


def sample_generators(ids: Sequence[str], seed: int, stream: int = 0) -> list[torch.Generator]:
    """One CPU generator per sample, so a sample's noise does not depend on its batch."""
    return [torch.Generator().manual_seed(sample_seed(seed, i) ^ stream) for i in ids]


def initial_noise(
    shape: tuple[int, ...], ids: Sequence[str], seed: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """One noise tensor per sample, each from its own generator (CPU, so devices agree)."""
    noise = [torch.randn(shape, generator=g) for g in sample_generators(ids, seed)]
    return torch.stack(noise).to(device=device, dtype=dtype)


def composite(pred: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``ŷ = o·pred + (1−o)·s``: outside the mask the result is the source, exactly."""
    return mask * pred + (1.0 - mask) * source


KNOWN_REGION: tuple[str, ...] = ("replace", "free")


def unknown_cells(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask at latent size, a cell unknown when ANY of its pixels is masked: a cell that
    straddles the mask's edge must not carry the object's latent back into the hole."""
    if mask.shape[-2:] == size:
        return mask
    return F.adaptive_max_pool2d(mask, size)


def encode_conditions(
    space: LatentSpace, layout: str, source: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Latents of the condition images the layout uses (``object``, ``context``)."""
    images = condition_images(source, mask)
    return {g: space.encode(images[g]) for g in LAYOUTS[layout] if g in images}


class DCGDSampler:
    """Runs eq. 6 over a sampling schedule; both branches in one batched forward per step."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        space: LatentSpace,
        text: TextConditioner,
        scheduler: SchedulerMixin,
        layout: str,
    ) -> None:
        self.unet = unet
        self.space = space
        self.text = text
        self.scheduler = scheduler
        self.layout = layout

    @torch.no_grad()
    def __call__(
        self,
        source: torch.Tensor,
        mask: torch.Tensor,
        t_info: list[str],
        t_mask: list[str],
        prompt_mode: str = "dual",
        w: float = 1.5,
        steps: int = 25,
        seed: int = 0,
        ids: Sequence[str] | None = None,
        paste_back: bool = True,
        known_region: Literal["replace", "free"] = "replace",
    ) -> torch.Tensor:
        """Fill ``mask`` in ``source`` ([-1,1], ``[B,3,H,W]``); returns ``[B,3,H,W]`` in [-1,1]."""
        if known_region not in KNOWN_REGION:
            raise ValueError(f"known_region must be one of {KNOWN_REGION}, got {known_region!r}")
        batch = source.shape[0]
        ids = list(ids) if ids is not None else [str(i) for i in range(batch)]
        dtype = next(self.unet.parameters()).dtype
        conditions = {
            k: v.to(dtype)
            for k, v in encode_conditions(self.space, self.layout, source, mask).items()
        }
        t_pos, t_neg = select_prompts(prompt_mode, t_info, t_mask)
        states = self.text(t_pos + t_neg).to(dtype)
        states_pos, states_neg = states[:batch], states[batch:]

        latent_shape = (
            self.space.channels,
            source.shape[-2] // self.space.downsample,
            source.shape[-1] // self.space.downsample,
        )
        self.scheduler.set_timesteps(steps, device=source.device)
        noise = initial_noise(latent_shape, ids, seed, source.device, dtype)
        latents = noise * self.scheduler.init_noise_sigma
        if known_region == "replace":
            known = self.space.encode(source).to(dtype)
            unknown = unknown_cells(mask, latent_shape[-2:]).to(dtype)
        # Stochastic samplers (DDPM) draw fresh noise each step: per-sample generators too.
        step_kwargs = {}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            step_kwargs["generator"] = sample_generators(ids, seed, stream=0x5EED)
        for t in self.scheduler.timesteps:
            if known_region == "replace":
                noised = self.scheduler.add_noise(known, noise, t.reshape(1))
                latents = unknown * latents + (1 - unknown) * noised
            model_in = self.scheduler.scale_model_input(latents, t)
            unet_in = assemble(self.layout, model_in, mask, conditions)
            # ε, v or x0, as the schedule's prediction_type says; the scheduler reads it so.
            prediction = guided_noise(self.unet, unet_in, t, states_pos, states_neg, w)
            latents = self.scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
        images = self.space.decode(latents.to(dtype)).float().clamp(-1, 1)
        return composite(images, source, mask) if paste_back else images
