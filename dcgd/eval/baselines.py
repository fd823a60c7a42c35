"""Methods the evaluation runs side by side, behind one small interface.

An ``InpaintingMethod`` has a ``name`` (its table column) and maps a batch (the data
module's dict: ``source`` ``[B,3,H,W]`` in [-1,1], ``mask`` ``[B,1,H,W]`` in {0,1}, and
``t_info`` / ``t_mask`` when described) to a prediction of the source's shape in [-1,1].
The evaluation composites it with the source before scoring, so a method may return
anything outside the mask.

Built in: OpenCV's Telea and Navier-Stokes inpainting, and ``dcgd_<mode>``: the DCGD model
under test sampled with another prompt mode (``dcgd_none`` is the no-prompt baseline).
To add a method, write a class with ``name`` and ``__call__(batch)`` and either register it
(``register_method("lama", LamaMethod)``) or name it by import path in a config
(``baselines: [opencv_telea, mypackage.methods.Lama]``); it is built with no arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from dcgd.errors import ConfigError

Batch = Mapping[str, Any]


@runtime_checkable
class InpaintingMethod(Protocol):
    name: str

    def __call__(self, batch: Batch) -> torch.Tensor: ...


class OpenCVInpaint:
    """OpenCV's classical inpainting: ``"telea"`` (fast marching, Telea 2004) or ``"ns"``
    (Navier-Stokes, Bertalmio et al. 2001), on 8-bit RGB with ``radius`` pixels of context."""

    FLAGS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}

    def __init__(self, algorithm: str = "telea", radius: int = 3) -> None:
        if algorithm not in self.FLAGS:
            raise ConfigError(f"unknown OpenCV inpainting {algorithm!r}; use telea or ns")
        if radius < 1:
            raise ConfigError(f"OpenCV inpainting radius must be >= 1 pixel, got {radius}")
        self.algorithm = algorithm
        self.radius = radius
        self.name = f"opencv_{algorithm}"

    @torch.no_grad()
    def inpaint(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1,1] and ``[B,1,H,W]`` masks -> the filled images."""
        images = ((source.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
        images = images.to(torch.uint8).permute(0, 2, 3, 1).numpy()
        masks = (mask.detach().cpu()[:, 0] > 0.5).numpy().astype(np.uint8) * 255
        out = [
            cv2.inpaint(np.ascontiguousarray(img), m, self.radius, self.FLAGS[self.algorithm])
            for img, m in zip(images, masks, strict=True)
        ]
        pred = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return pred.to(source.device, source.dtype)

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.inpaint(batch["source"], batch["mask"])


class ModelMethod:
    """The model under test, through its ``DCGDPipeline``, under a prompt mode.

    ``dcgd_none`` samples the checkpoint under test with empty prompts on both branches of
    eq. 6; the other modes give the paper's prompt ablations of the same weights. (A model
    TRAINED with ``prompt_mode: none`` is a different checkpoint: test it on its own.)
    """

    def __init__(self, pipeline: Any, prompt_mode: str) -> None:
        from dcgd.method.guidance import PROMPT_MODES

        if prompt_mode not in PROMPT_MODES:
            raise ConfigError(
                f"unknown prompt mode {prompt_mode!r} in dcgd_{prompt_mode}; use one of "
                f"{', '.join('dcgd_' + m for m in PROMPT_MODES)}"
            )
        from dcgd.sampling.pipeline import DCGDPipeline

        if not isinstance(pipeline, DCGDPipeline):
            raise ConfigError(
                f"dcgd_{prompt_mode} needs the DCGD pipeline of the model under test "
                f"(module.pipeline()), got {type(pipeline).__name__}"
            )
        self.pipeline = pipeline
        self.prompt_mode = prompt_mode
        self.name = f"dcgd_{prompt_mode}"

    @torch.no_grad()
    def __call__(self, batch: Batch) -> torch.Tensor:
        from dcgd.method.guidance import batch_descriptions

        t_info, t_mask = batch_descriptions(batch, self.prompt_mode)
        return self.pipeline(
            batch["source"], batch["mask"], t_info, t_mask, ids=batch.get("id"),
            prompt_mode=self.prompt_mode,
        )  # fmt: skip


def telea(radius: int = 3) -> OpenCVInpaint:
    return OpenCVInpaint("telea", radius)


def navier_stokes(radius: int = 3) -> OpenCVInpaint:
    return OpenCVInpaint("ns", radius)


# name -> factory with no arguments; extend with register_method.
BASELINES: dict[str, Callable[[], InpaintingMethod]] = {
    "opencv_telea": telea,
    "opencv_ns": navier_stokes,
}


def register_method(name: str, factory: Callable[[], InpaintingMethod]) -> None:
    """Make ``name`` usable in ``baselines`` lists (the factory takes no arguments)."""
    BASELINES[name] = factory


def _import(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"cannot import method {path!r}: {err}") from None


def build_method(spec: str, pipeline: Any = None) -> InpaintingMethod:
    """A method from its name: a registered baseline, ``dcgd_<prompt mode>`` (sampling
    ``pipeline``, the model under test), or the import path of a class built with no
    arguments."""
    if spec in BASELINES:
        method = BASELINES[spec]()
    elif spec.startswith("dcgd_"):
        method = ModelMethod(pipeline, spec.removeprefix("dcgd_"))
    elif "." in spec:
        method = _import(spec)()
    else:
        known = ", ".join([*BASELINES, "dcgd_none", "dcgd_positive", "dcgd_negative"])
        raise ConfigError(
            f"unknown method {spec!r}; use one of {known}, or the import path of a class "
            "with a name and __call__(batch) -> prediction"
        )
    if not isinstance(method, InpaintingMethod) or not isinstance(method.name, str):
        raise ConfigError(
            f"{spec!r} is not an inpainting method: it needs a 'name' string and "
            "__call__(batch) returning a [B,3,H,W] prediction in [-1,1]"
        )
    return method
