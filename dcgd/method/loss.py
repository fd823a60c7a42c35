"""Eq. 7: the loss, ``‖ε − (w·ε(x', τ(T_info)) + (1−w)·ε(x', τ(T_mask)))‖²``, and its variants.

``combined`` (the paper) regresses the eq. 6 combination of both branches onto the target;
``branches`` is standard classifier-free-guidance training (the positive branch alone, its
prompt dropped to "" at random), the usual alternative to compare against.

Eq. 7 is written for the noise (``epsilon``), but the combination of eq. 6 is linear in the
network's output, so it applies unchanged to the other two parametrisations diffusers'
schedulers understand: ``v_prediction`` (``v = √ᾱ·ε − √(1−ᾱ)·x₀``) and ``sample`` (x₀
itself). The loss target and the sampler must read the output the same way; a schedule
whose ``prediction_type`` is none of these is refused, never trained on the noise silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from dcgd.errors import ConfigError
from dcgd.method.guidance import check_prompt_mode, guided_noise, select_prompts
from dcgd.method.input import assemble, check_layout
from dcgd.method.randomness import Generators, draw_integers, draw_normal, draw_uniform
from dcgd.validation import finite

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
LOSSES: tuple[str, ...] = ("combined", "branches")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"noise_schedule prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
            f"got {prediction_type!r}"
        )
    return prediction_type


def prediction_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The tensor the (combined) prediction is regressed onto at ``timesteps``."""
    kind = check_prediction_type(scheduler.config.prediction_type)
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return latents


def min_snr_weight(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
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


@dataclass(frozen=True)
class LossSettings:
    """What eq. 7 needs besides the networks: the eq. 5 layout, the prompt ablation, the
    guidance weight inside the loss, and the variants' knobs."""

    layout: str = "paper_mask"
    prompt_mode: str = "dual"
    kind: str = "combined"  # or "branches"
    w_train: float = 1.5
    prompt_dropout: float = 0.1  # branches only
    snr_gamma: float | None = None

    def __post_init__(self) -> None:
        check_layout(self.layout)
        check_prompt_mode(self.prompt_mode)
        if self.kind not in LOSSES:
            raise ConfigError(f"loss must be 'combined' or 'branches', got {self.kind!r}")
        finite("w_train", self.w_train)
        finite("prompt_dropout", self.prompt_dropout, 0, 1)
        if self.snr_gamma is not None:
            finite("snr_gamma", self.snr_gamma, 0, low_open=True)


def per_sample_loss(
    settings: LossSettings,
    unet: torch.nn.Module,
    schedule: DDPMScheduler,
    latents: torch.Tensor,
    conditions: dict[str, torch.Tensor],
    mask: torch.Tensor,
    t_info: list[str],
    t_mask: list[str],
    encode_prompts: Callable[[list[str]], torch.Tensor],
    generator: Generators = None,
) -> torch.Tensor:
    """The loss of each sample, ``[B]``, at a random timestep per sample.

    ``latents``: the clean targets' latents ``z_0``; ``conditions``: the eq. 5 condition
    latents of the sources; ``encode_prompts``: ``τθ`` (prompts -> states, one call for both
    branches); ``generator``: one per sample (what training passes) or one for the batch.
    """
    noise = draw_normal(latents.shape, generator, latents.device, latents.dtype)
    timesteps = draw_integers(
        schedule.config.num_train_timesteps, latents.shape[0], generator, latents.device
    )
    noisy = schedule.add_noise(latents, noise, timesteps)
    unet_in = assemble(settings.layout, noisy, mask, conditions)
    t_pos, t_neg = select_prompts(settings.prompt_mode, t_info, t_mask)

    if settings.kind == "combined":
        states = encode_prompts(t_pos + t_neg)
        states_pos, states_neg = states[: len(t_pos)], states[len(t_pos) :]
        pred = guided_noise(unet, unet_in, timesteps, states_pos, states_neg, settings.w_train)
    else:
        keep = draw_uniform(len(t_pos), generator, latents.device) >= settings.prompt_dropout
        t_pos = [p if k else "" for p, k in zip(t_pos, keep.tolist(), strict=True)]
        pred = unet(unet_in, timesteps, encoder_hidden_states=encode_prompts(t_pos)).sample

    goal = prediction_target(schedule, latents, noise, timesteps)
    loss = F.mse_loss(pred.float(), goal.float(), reduction="none").mean(dim=(1, 2, 3))
    if settings.snr_gamma is not None:
        loss = loss * min_snr_weight(schedule, timesteps, settings.snr_gamma)
    return loss
