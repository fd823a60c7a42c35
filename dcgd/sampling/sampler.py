"""The DCGD sampling loop: eq. 5 input, eq. 6 guidance at every step, known region pasted back.

The known region (outside the mask) is not the model's to invent: with ``known_region:
"replace"`` (the default) the latent there is reset, before every step, to the source
noised to that step's level (RePaint's replacement, without its resampling), so the
U-Net always sees there what training showed it, a forward-noised clean image, and the
hole is drawn against the true surroundings. ``"free"`` leaves the whole latent to the
model (the known region then steers the fill only through the eq. 5 context channel).

Deterministic for a seed, per sample: each sample's noise comes from generators seeded by
(seed, sample id) (``dcgd.method.randomness``), so a result does not depend on the batch it
ran in, the batch size or the DDP rank. ``DCGDPipeline`` is the way to call it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from dcgd.components.latent_space import LatentSpace
from dcgd.components.text_encoder import TextConditioner
from dcgd.errors import ConfigError
from dcgd.method.guidance import guided_noise, select_prompts
from dcgd.method.input import assemble, composite, encode_conditions
from dcgd.method.randomness import initial_noise, sample_generators

KNOWN_REGION: tuple[str, ...] = ("replace", "free")


def check_known_region(known_region: str) -> str:
    if known_region not in KNOWN_REGION:
        raise ConfigError(
            f"known_region must be one of {', '.join(KNOWN_REGION)}, got {known_region!r}"
        )
    return known_region


def unknown_cells(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask at latent size, a cell unknown when ANY of its pixels is masked: a cell that
    straddles the mask's edge must not carry the object's latent back into the hole."""
    if mask.shape[-2:] == size:
        return mask
    return F.adaptive_max_pool2d(mask, size)


@torch.no_grad()
def sample(
    unet: UNet2DConditionModel,
    space: LatentSpace,
    text: TextConditioner,
    scheduler: SchedulerMixin,
    layout: str,
    source: torch.Tensor,
    mask: torch.Tensor,
    t_info: list[str],
    t_mask: list[str],
    *,
    prompt_mode: str,
    w: float,
    steps: int,
    seed: int,
    ids: Sequence[str],
    paste_back: bool = True,
    known_region: str = "replace",
) -> torch.Tensor:
    """Fill ``mask`` in ``source`` ([-1,1], ``[B,3,H,W]``); returns ``[B,3,H,W]`` in [-1,1].

    Both eq. 6 branches run as one batched U-Net call per step; the conditions and prompts
    are encoded once per image, not per step."""
    check_known_region(known_region)
    batch = source.shape[0]
    dtype = next(unet.parameters()).dtype
    conditions = encode_conditions(layout, source, mask, space.encode)
    conditions = {k: v.to(dtype) for k, v in conditions.items()}
    t_pos, t_neg = select_prompts(prompt_mode, t_info, t_mask)
    states = text(t_pos + t_neg).to(dtype)
    states_pos, states_neg = states[:batch], states[batch:]

    latent_shape = (
        space.channels,
        source.shape[-2] // space.downsample,
        source.shape[-1] // space.downsample,
    )
    scheduler.set_timesteps(steps, device=source.device)
    noise = initial_noise(latent_shape, ids, seed, source.device, dtype)
    latents = noise * scheduler.init_noise_sigma
    if known_region == "replace":
        known = space.encode(source).to(dtype)
        unknown = unknown_cells(mask, latent_shape[-2:]).to(dtype)
    # Stochastic samplers (DDPM) draw fresh noise each step: per-sample generators too.
    step_kwargs = {}
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs["generator"] = sample_generators(ids, seed, "steps")
    for t in scheduler.timesteps:
        if known_region == "replace":
            noised = scheduler.add_noise(known, noise, t.reshape(1))
            latents = unknown * latents + (1 - unknown) * noised
        model_in = scheduler.scale_model_input(latents, t)
        unet_in = assemble(layout, model_in, mask, conditions)
        # ε, v or x0, as the schedule's prediction_type says; the scheduler reads it so.
        prediction = guided_noise(unet, unet_in, t, states_pos, states_neg, w)
        latents = scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
    images = space.decode(latents.to(dtype)).float().clamp(-1, 1)
    return composite(images, source, mask) if paste_back else images
