"""Noise schedulers from diffusers: DDPM for training, a choice of samplers for inference."""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from dcgd.errors import ConfigError, ModelLoadError

SAMPLERS: dict[str, type[SchedulerMixin]] = {
    "ddim": DDIMScheduler,
    "dpmsolver++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "ddpm": DDPMScheduler,
}

# Stable Diffusion's training schedule; a pretrained model brings its own.
DEFAULT_TRAIN_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}


def train_scheduler(
    pretrained: str | None = None, overrides: dict[str, Any] | None = None
) -> DDPMScheduler:
    """The DDPM schedule used to add noise in training (pretrained model's, or the default)."""
    if pretrained is not None:
        try:
            config = DDPMScheduler.load_config(pretrained, subfolder="scheduler")
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"no scheduler/ config under {pretrained!r}: {err}") from None
    else:
        config = dict(DEFAULT_TRAIN_SCHEDULE)
    config.update(overrides or {})
    return DDPMScheduler.from_config(config)


def sampling_scheduler(name: str, train: SchedulerMixin) -> SchedulerMixin:
    """A sampler sharing the training schedule's betas and prediction type."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    extra = {"algorithm_type": "dpmsolver++"} if name == "dpmsolver++" else {}
    return SAMPLERS[name].from_config(train.config, **extra)
