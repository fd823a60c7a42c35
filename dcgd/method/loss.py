"""What the U-Net predicts, and what eq. 7 regresses it onto, for each parametrisation.

Eq. 7 is written for the noise (``epsilon``), but the combination of eq. 6 is linear in the
network's output, so it applies unchanged to the other two parametrisations diffusers'
schedulers understand: ``v_prediction`` (``v = √ᾱ·ε − √(1−ᾱ)·x₀``) and ``sample`` (x₀
itself). The loss target and the sampler must read the output the same way; a schedule
whose ``prediction_type`` is none of these is refused, never trained on the noise silently.
"""

from __future__ import annotations

import torch
from diffusers.training_utils import compute_snr

from dcgd.errors import ConfigError

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"noise_schedule prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
            f"got {prediction_type!r}"
        )
    return prediction_type


def prediction_target(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The tensor the (combined) prediction is regressed onto at ``timesteps``."""
    kind = check_prediction_type(scheduler.config.prediction_type)
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return latents


def min_snr_weight(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ (Hang et al. 2023) in each parametrisation: the weight that turns the
    loss into ``min(SNR, γ)·‖x₀ − x̂₀‖²``."""
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    kind = check_prediction_type(scheduler.config.prediction_type)
    if kind == "epsilon":
        return clipped / snr
    if kind == "v_prediction":
        return clipped / (snr + 1)
    return clipped
