"""Object removal on one photograph of any size: the Python side of ``python -m dcgd remove``.

>>> from dcgd.sampling.pipeline import load_pipeline
>>> from dcgd.sampling.remover import Remover
>>> remover = Remover(load_pipeline("exported/"), dilate=5)
>>> result = remover(image, mask, key="photo.jpg")   # uint8 [H,W,3], same size as image
>>> t_info, t_mask = remover.describe(image, mask)   # what it would read, without sampling
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from dcgd.data.images import check_mask, mask_to_tensor, to_tensor
from dcgd.data.masks import postprocess
from dcgd.describe.base import Describer
from dcgd.errors import ConfigError
from dcgd.method.guidance import needed_descriptions
from dcgd.sampling.pipeline import DCGDPipeline
from dcgd.sampling.windows import Window, context_window, crop, paste, resize_image, resize_mask

# The pipeline settings a caller may override per run.
SAMPLING_KEYS = ("prompt_mode", "w", "steps", "seed", "sampler", "known_region")


def _whole(value: object) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


@dataclass
class Removal:
    """One image's result and what produced it."""

    image: np.ndarray  # uint8 [H,W,3]
    mask: np.ndarray  # the (dilated) 0/1 mask actually filled
    window: Window
    t_info: str
    t_mask: str


@dataclass
class _Seen:
    """One image as the model will see it: the (dilated) mask, the window, the window's
    pixels and mask at the model's resolution, and the descriptions it will read."""

    mask: np.ndarray
    window: Window
    source: torch.Tensor
    small_mask: torch.Tensor
    t_info: str
    t_mask: str


@dataclass
class Remover:
    """Crop a context window around the mask, fill it with the pipeline, paste it back.

    Args:
        pipeline: the trained model.
        dilate: grow the mask by this many pixels first (covers edges, halos, shadows).
        context: window side as a multiple of the mask's box side (>= 1).
        resolution: the side the model runs at; default the one it was trained at.
        t_info / t_mask: fixed descriptions; ``None`` asks ``describer`` (or leaves "").
        describer: describes each window when a description is not given.
        sampling: ``prompt_mode``, ``w``, ``steps``, ``seed``, ``sampler`` overrides.
    """

    pipeline: DCGDPipeline
    dilate: int = 0
    context: float = 2.0
    resolution: int | None = None
    t_info: str | None = None
    t_mask: str | None = None
    describer: Describer | None = None
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resolution = self.resolution or self.pipeline.settings.resolution
        multiple = self.pipeline.size_multiple
        if self.resolution % multiple:
            raise ConfigError(
                f"resolution {self.resolution} is not a multiple of {multiple} (the model's "
                "total downsampling); choose e.g. "
                f"{max(multiple, self.resolution // multiple * multiple)}"
            )
        # `nan < 1` is False: test for finite first, or nan slips through to the window maths.
        if not math.isfinite(self.context) or self.context < 1:
            raise ConfigError(
                f"context must be a finite number >= 1 (a multiple of the mask's box); "
                f"got {self.context}"
            )
        if not _whole(self.dilate) or self.dilate < 0:
            raise ConfigError(f"dilate is a whole number of pixels >= 0; got {self.dilate!r}")
        self._check_sampling()

    def _check_sampling(self) -> None:
        """Refuse sampling overrides that would run but write garbage (a nan ``w`` fills the
        hole with black) or fail deep inside the scheduler."""
        unknown = set(self.sampling) - set(SAMPLING_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown sampling setting(s) {', '.join(sorted(unknown))}; "
                f"use {', '.join(SAMPLING_KEYS)}"
            )
        w = self.sampling.get("w")
        if w is not None and (not isinstance(w, Real) or not math.isfinite(w)):
            raise ConfigError(f"w (the guidance weight) must be a finite number; got {w!r}")
        steps, seed = self.sampling.get("steps"), self.sampling.get("seed")
        # A scheduler cannot take more steps than the model was trained with timesteps.
        most = int(self.pipeline.train_schedule.config.num_train_timesteps)
        if steps is not None and (not _whole(steps) or not 1 <= steps <= most):
            raise ConfigError(
                f"steps must be a whole number from 1 to {most} (the model's training "
                f"timesteps); got {steps!r}"
            )
        if seed is not None and not _whole(seed):
            raise ConfigError(f"seed must be a whole number; got {seed!r}")

    @property
    def prompt_mode(self) -> str:
        return self.sampling.get("prompt_mode") or self.pipeline.settings.prompt_mode

    def missing_descriptions(self) -> list[str]:
        """Descriptions the prompt mode needs that neither the user nor a describer gives."""
        if self.describer is not None:
            return []
        given = {"t_info": self.t_info, "t_mask": self.t_mask}
        return [name for name in needed_descriptions(self.prompt_mode) if given[name] is None]

    def describe(self, image: np.ndarray, mask: np.ndarray, key: str = "image") -> tuple[str, str]:
        """``(t_info, t_mask)``: the descriptions ``self(image, mask, key)`` would use,
        without sampling: the remover's own, the describer's of the window the model sees
        for the rest the prompt mode needs, "" where there is none."""
        seen = self._prepare(image, mask, key, None, None)
        return seen.t_info, seen.t_mask

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        key: str = "image",
        t_info: str | None = None,
        t_mask: str | None = None,
    ) -> Removal:
        """Fill ``mask`` (0/1 ``[H,W]``) in ``image`` (uint8 ``[H,W,3]``); ``key`` seeds it.
        ``t_info`` / ``t_mask`` describe this image (over the remover's own)."""
        seen = self._prepare(image, mask, key, t_info, t_mask)
        result = self.pipeline(
            seen.source, seen.small_mask, [seen.t_info], [seen.t_mask], ids=[key], **self.sampling
        )
        filled = ((result[0].float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        filled = filled.permute(1, 2, 0).numpy()
        return Removal(
            paste(image, filled, seen.mask, seen.window),
            seen.mask,
            seen.window,
            seen.t_info,
            seen.t_mask,
        )

    def _prepare(
        self, image: np.ndarray, mask: np.ndarray, key: str, t_info: str | None, t_mask: str | None
    ) -> _Seen:
        """What the model will see for ``image`` and ``mask`` and the descriptions it will
        read: shared by :meth:`describe` and :meth:`__call__`, so they cannot disagree."""
        mask = postprocess(mask, dilation=self.dilate)
        check_mask(mask, image.shape, f"{key} (mask dilated by {self.dilate})", key)
        window = context_window(mask, self.resolution, self.context)
        size = self.resolution
        source = to_tensor(resize_image(crop(image, window), size)).unsqueeze(0)
        small_mask = mask_to_tensor(resize_mask(crop(mask, window), size)).unsqueeze(0)
        t_info, t_mask = self._describe(
            source,
            small_mask,
            self.t_info if t_info is None else t_info,
            self.t_mask if t_mask is None else t_mask,
        )
        return _Seen(mask, window, source, small_mask, t_info, t_mask)

    def _describe(
        self, source: torch.Tensor, mask: torch.Tensor, t_info: str | None, t_mask: str | None
    ) -> tuple[str, str]:
        """The given descriptions; the describer's (of the window the model sees) for the
        rest the prompt mode needs; "" otherwise."""
        needed = needed_descriptions(self.prompt_mode)
        wanted = [
            n for n, v in (("t_info", t_info), ("t_mask", t_mask)) if n in needed and v is None
        ]
        if wanted and self.describer is not None:
            device = self.pipeline.device
            (found,) = self.describer.describe(
                {"source": source.to(device), "mask": mask.to(device)}
            )
            t_info = found.t_info if t_info is None else t_info
            t_mask = found.t_mask if t_mask is None else t_mask
        return t_info or "", t_mask or ""
