"""Methods the evaluation can run side by side, behind one small interface.

An ``InpaintingMethod`` has a ``name`` (the table column) and maps ``(source, mask)`` in the
batch convention (``[B,3,H,W]`` in [-1,1], ``[B,1,H,W]`` in {0,1}) to a prediction of the
same shape. Any model can be wrapped as one (the DCGD model with ``prompt_mode=none`` is).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from dcgd.errors import ConfigError


@runtime_checkable
class InpaintingMethod(Protocol):
    name: str

    def __call__(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class OpenCVInpaint:
    """OpenCV's classical inpainting: ``"telea"`` (fast marching, Telea 2004) or ``"ns"``
    (Navier-Stokes, Bertalmio et al. 2001), on 8-bit RGB, ``radius`` pixels of context."""

    FLAGS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}

    def __init__(self, algorithm: str = "telea", radius: int = 3) -> None:
        if algorithm not in self.FLAGS:
            raise ConfigError(f"unknown OpenCV inpainting {algorithm!r}; use telea or ns")
        self.algorithm = algorithm
        self.radius = radius
        self.name = f"opencv_{algorithm}"

    @torch.no_grad()
    def __call__(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        images = ((source.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
        images = images.to(torch.uint8).permute(0, 2, 3, 1).numpy()
        masks = (mask.detach().cpu()[:, 0] > 0.5).numpy().astype(np.uint8) * 255
        out = [
            cv2.inpaint(np.ascontiguousarray(img), m, self.radius, self.FLAGS[self.algorithm])
            for img, m in zip(images, masks, strict=True)
        ]
        pred = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return pred.to(source.device, source.dtype)


def telea(radius: int = 3) -> OpenCVInpaint:
    return OpenCVInpaint("telea", radius)


def navier_stokes(radius: int = 3) -> OpenCVInpaint:
    return OpenCVInpaint("ns", radius)


BASELINES = {"opencv_telea": telea, "opencv_ns": navier_stokes}
