"""Eq. 6, dual CLIP guidance: ``ε̂ = w·ε(x', τ(T_pos)) + (1−w)·ε(x', τ(T_neg))``.

This is classifier-free guidance with the negative prompt in place of the empty one:
``ε̂ = ε_neg + w·(ε_pos − ε_neg)``. Both branches run as ONE batched U-Net call of size 2B
(of size B when both read the same prompt: then ``ε̂ = ε``).
The paper's prompt ablations are choices of (T_pos, T_neg).
"""

from __future__ import annotations

from typing import Literal

import torch

from dcgd.errors import ConfigError

PromptMode = Literal["none", "positive", "negative", "dual"]

# The prompt ablations (DESIGN.md §1) as data: which description feeds each branch of eq. 6
# (None: the empty prompt ""). Everything else about a mode is derived from this table.
PROMPT_TABLE: dict[str, tuple[str | None, str | None]] = {
    "none": (None, None),
    "positive": ("t_info", None),
    "negative": (None, "t_mask"),
    "dual": ("t_info", "t_mask"),
}
PROMPT_MODES: tuple[str, ...] = tuple(PROMPT_TABLE)


def check_prompt_mode(prompt_mode: str) -> str:
    if prompt_mode not in PROMPT_TABLE:
        raise ConfigError(
            f"prompt_mode must be one of {', '.join(PROMPT_MODES)}, got {prompt_mode!r}"
        )
    return prompt_mode


def needed_descriptions(prompt_mode: str) -> tuple[str, ...]:
    """The descriptions a prompt mode reads (``t_info`` / ``t_mask``), in that order."""
    return tuple(name for name in PROMPT_TABLE[check_prompt_mode(prompt_mode)] if name)


def batch_descriptions(batch: dict, prompt_mode: str) -> tuple[list[str], list[str]]:
    """``(t_info, t_mask)`` of a batch; "" for all when the prompt mode reads neither."""
    if "t_info" in batch and "t_mask" in batch:
        return list(batch["t_info"]), list(batch["t_mask"])
    if not needed_descriptions(prompt_mode):
        return [""] * len(batch["source"]), [""] * len(batch["source"])
    raise ConfigError(
        f"prompt_mode {prompt_mode!r} needs descriptions but the batch has no t_info / t_mask: "
        "set data.init_args.describer (e.g. LabelDescriber for the built-in data, "
        "ClipRegionDescriber for real images) or use prompt_mode: none"
    )


def select_prompts(
    prompt_mode: str, t_info: list[str], t_mask: list[str]
) -> tuple[list[str], list[str]]:
    """(T_pos, T_neg) for a prompt mode: :data:`PROMPT_TABLE` applied to a batch."""
    given = {"t_info": list(t_info), "t_mask": list(t_mask)}
    pos, neg = PROMPT_TABLE[check_prompt_mode(prompt_mode)]
    empty = [""] * len(t_info)
    return (given[pos] if pos else empty), (given[neg] if neg else empty)


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
    """``ε̂`` of eq. 6: both branches in one forward, combined with weight ``w``.

    When both branches read the same prompt states (``prompt_mode: none``, or descriptions
    that are all ""), ``ε_pos = ε_neg = ε`` and eq. 6 is ``ε`` for every ``w`` (its gradient
    too): one forward of size B does, at half the cost."""
    if states_pos.shape == states_neg.shape and torch.equal(states_pos, states_neg):
        return unet(unet_input, timesteps, encoder_hidden_states=states_pos).sample
    eps_pos, eps_neg = dual_forward(unet, unet_input, timesteps, states_pos, states_neg)
    return combine(eps_pos, eps_neg, w)
