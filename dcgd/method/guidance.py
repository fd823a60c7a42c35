"""Eq. 6, dual CLIP guidance: ``ε̂ = w·ε(x', τ(T_pos)) + (1−w)·ε(x', τ(T_neg))``.

This is classifier-free guidance with the negative prompt in place of the empty one:
``ε̂ = ε_neg + w·(ε_pos − ε_neg)``. Both branches run as ONE batched U-Net call of size 2B.
The paper's prompt ablations are choices of (T_pos, T_neg).
"""

from __future__ import annotations

from typing import Literal

import torch

PromptMode = Literal["none", "positive", "negative", "dual"]
PROMPT_MODES: tuple[str, ...] = ("none", "positive", "negative", "dual")


def select_prompts(
    prompt_mode: str, t_info: list[str], t_mask: list[str]
) -> tuple[list[str], list[str]]:
    """(T_pos, T_neg) for a prompt mode: the table in DESIGN.md §1."""
    empty = [""] * len(t_info)
    if prompt_mode == "none":
        return empty, empty
    if prompt_mode == "positive":
        return list(t_info), empty
    if prompt_mode == "negative":
        return empty, list(t_mask)
    if prompt_mode == "dual":
        return list(t_info), list(t_mask)
    raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {prompt_mode!r}")


def combine(eps_pos: torch.Tensor, eps_neg: torch.Tensor, w: float) -> torch.Tensor:
    """Eq. 6 written as CFG: ``ε_neg + w·(ε_pos − ε_neg)``."""
    return eps_neg + w * (eps_pos - eps_neg)


def dual_forward(
    unet: torch.nn.Module,
    unet_input: torch.Tensor,
    timesteps: torch.Tensor,
    states_pos: torch.Tensor,
    states_neg: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both guidance branches in one batched forward; returns ``(ε_pos, ε_neg)``."""
    batch = unet_input.shape[0]
    if timesteps.ndim == 0:
        timesteps = timesteps.expand(batch)
    out = unet(
        torch.cat([unet_input, unet_input]),
        torch.cat([timesteps, timesteps]),
        encoder_hidden_states=torch.cat([states_pos, states_neg]),
    ).sample
    return out[:batch], out[batch:]


def guided_noise(
    unet: torch.nn.Module,
    unet_input: torch.Tensor,
    timesteps: torch.Tensor,
    states_pos: torch.Tensor,
    states_neg: torch.Tensor,
    w: float,
) -> torch.Tensor:
    """``ε̂`` of eq. 6: both branches in one forward, combined with weight ``w``."""
    eps_pos, eps_neg = dual_forward(unet, unet_input, timesteps, states_pos, states_neg)
    return combine(eps_pos, eps_neg, w)
