"""Context windows: run a fixed-resolution model on images of any size and aspect.

A square window around the mask (the mask's box grown by a context factor, never smaller
than the model's resolution when the image allows it) is cut out, padded by mirroring where
it passes the image border, resized to the model's resolution, and the model's result is
resized back and pasted ONLY under the full-resolution mask: every other pixel of the image
is returned exactly as it was given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Window:
    """A ``side`` x ``side`` square at (``top``, ``left``); may reach outside the image."""

    top: int
    left: int
    side: int


def context_window(mask: np.ndarray, resolution: int, context: float = 2.0) -> Window:
    """The square around ``mask`` (``[H,W]``, non-empty) the model should see.

    Its side is the larger side of the mask's box times ``context``, at least ``resolution``
    (a small hole is seen at the model's native scale) unless the image itself is smaller;
    it is centred on the box and shifted to stay inside the image where it fits.
    """
    if context < 1.0:
        raise ValueError(f"context must be >= 1 (the window holds the whole mask); got {context}")
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    box = max(y1 - y0, x1 - x0)
    side = max(math.ceil(box * context), min(resolution, max(height, width)))
    return Window(
        _place(y0, y1, side, height),
        _place(x0, x1, side, width),
        side,
    )


def _place(lo: int, hi: int, side: int, length: int) -> int:
    """Start of a ``side`` interval centred on [lo, hi), kept within [0, length) if it fits."""
    start = (lo + hi - side) // 2
    if side <= length:
        return min(max(start, 0), length - side)
    return (length - side) // 2  # wider than the image: centred, padded on both sides


def crop(image: np.ndarray, window: Window) -> np.ndarray:
    """The window's pixels; outside the image, the image mirrored (no hard black border)."""
    height, width = image.shape[:2]
    top, left, side = window.top, window.left, window.side
    pads = (
        (max(0, -top), max(0, top + side - height)),
        (max(0, -left), max(0, left + side - width)),
    )
    pads += ((0, 0),) * (image.ndim - 2)
    padded = np.pad(image, pads, mode="symmetric") if any(any(p) for p in pads) else image
    y, x = top + pads[0][0], left + pads[1][0]
    return np.ascontiguousarray(padded[y : y + side, x : x + side])


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square ``uint8`` image to ``size`` (area filter when shrinking, cubic when growing)."""
    if image.shape[0] == size:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """0/1 mask to ``size``; a pixel is masked if any part of it was (never loses thin parts)."""
    if mask.shape[0] == size:
        return mask
    interpolation = cv2.INTER_AREA if mask.shape[0] > size else cv2.INTER_LINEAR
    coverage = cv2.resize(mask.astype(np.float32), (size, size), interpolation=interpolation)
    return (coverage > 0).astype(np.uint8)


def paste(image: np.ndarray, result: np.ndarray, mask: np.ndarray, window: Window) -> np.ndarray:
    """``image`` with ``result`` (the window's content, any size) written under ``mask`` only."""
    height, width = image.shape[:2]
    filled = resize_image(result, window.side)
    y0, x0 = max(window.top, 0), max(window.left, 0)
    y1, x1 = min(window.top + window.side, height), min(window.left + window.side, width)
    inner = filled[y0 - window.top : y1 - window.top, x0 - window.left : x1 - window.left]
    out = image.copy()
    region = out[y0:y1, x0:x1]
    under = mask[y0:y1, x0:x1].astype(bool)
    region[under] = inner[under]
    return out
