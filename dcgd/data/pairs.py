"""Training / evaluation pairs: ``hole`` (classic inpainting) and ``paste`` (object removal).

A pair is ``(source, mask, target)`` as ``uint8`` arrays (mask 0/1), plus ``hidden``: the
pixels whose target ``source`` does not show (0/1, ``hidden ⊆ mask``):

- ``hole``: ``source = target∘(1−mask)``; there is no object, so ``source∘mask`` is zero, and
  ``hidden`` is the whole mask.
- ``paste``: an object cut-out is alpha-blended over the clean ``target``, as a photo would
  show it; ``source`` is the composite and ``mask`` its (dilated) footprint, so
  ``source∘mask`` is the object to remove plus the ring of background the user's brush covers.
  ``hidden`` is where the object is opaque (alpha 255).

The pixels of ``target`` under ``hidden`` never reach ``source`` (DESIGN.md §2): a hole zeroes
them; an opaque object covers them, as in a real photo. The ring between the object and the
mask edge, and the object's semi-transparent (anti-aliased) edge, show the target as a photo
of the object would: the model meets in training the object channel it gets at inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from dcgd.data.buckets import Bucket, bucket_index
from dcgd.data.masks import postprocess

PAIR_KINDS = ("hole", "paste")
PASTE_TRIES = 20  # scales and places tried per paste before giving up on that object


@dataclass
class Pair:
    """One sample before tensor conversion."""

    source: np.ndarray  # uint8 [H,W,3]
    mask: np.ndarray  # uint8 [H,W] in {0,1}
    target: np.ndarray  # uint8 [H,W,3]
    kind: str  # "hole" | "paste"
    object_label: str = ""  # class of the pasted object ("" for hole pairs / unknown)
    meta: dict = field(default_factory=dict)
    # uint8 [H,W] in {0,1}, ⊆ mask: pixels whose target the source does not show (the whole
    # mask of a hole pair, the opaque object of a paste pair); None means the whole mask.
    hidden: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.hidden is None:
            self.hidden = self.mask


def hole_pair(target: np.ndarray, mask: np.ndarray) -> Pair:
    """Classic inpainting: the hole is cut out of the target (black, as other tools show it)."""
    source = target * (1 - mask[..., None]).astype(target.dtype)
    mask = mask.astype(np.uint8)
    return Pair(source=source, mask=mask, target=target, kind="hole", hidden=mask)


def paste_object(
    target: np.ndarray, cutout: np.ndarray, x: int, y: int, dilation: int
) -> tuple[np.ndarray, np.ndarray]:
    """Blend RGBA ``cutout`` over ``target`` at top-left ``(x, y)``: ``(source, mask)``.

    The source is what a photo of the object would show: ``alpha·colour + (1−alpha)·target``,
    so it equals the target wherever alpha is 0 and the cut-out's colour wherever alpha is
    255. The mask is every pixel the cut-out touches (alpha > 0), dilated by ``dilation``
    pixels so anti-aliasing and a user's imprecise brush are covered; the ring it adds shows
    the target, as the user's photo does. Only the opaque pixels hide the target
    (:func:`opaque_pixels`).
    """
    h, w = target.shape[:2]
    ch, cw = cutout.shape[:2]
    # Clip the cut-out to the image (a paste may hang over the border).
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + cw, w), min(y + ch, h)
    patch = cutout[y0 - y : y1 - y, x0 - x : x1 - x]
    # Work in the cut-out's box grown by the dilation: nothing outside it changes, and whole-
    # image float arrays would cost more than the rest of the sample at 512 px.
    bx0, by0 = max(x0 - dilation, 0), max(y0 - dilation, 0)
    bx1, by1 = min(x1 + dilation, w), min(y1 + dilation, h)
    alpha = np.zeros((by1 - by0, bx1 - bx0, 1), np.float32)
    alpha[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0, 0] = patch[..., 3] / np.float32(255.0)
    colour = np.zeros((by1 - by0, bx1 - bx0, 3), np.float32)
    colour[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0] = patch[..., :3]
    touched = alpha[..., 0] > 0
    box_mask = postprocess(touched.astype(np.uint8), dilation=dilation)
    source = target.copy()
    region = source[by0:by1, bx0:bx1]
    # The object over the target, as a photo shows it. Only where alpha > 0: elsewhere the
    # blend is the target itself, kept bit for bit. Alpha 1 gives the colour exactly.
    blended = alpha * colour + (1 - alpha) * region.astype(np.float32)
    region[touched] = np.clip(np.rint(blended[touched]), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[by0:by1, bx0:bx1] = box_mask
    return source, mask


def opaque_pixels(shape: tuple[int, ...], cutout: np.ndarray, x: int, y: int) -> np.ndarray:
    """Where ``cutout`` pasted at ``(x, y)`` into an image of ``shape`` is opaque (alpha 255),
    clipped to the image: ``uint8`` ``[H,W]`` in {0,1}, the pixels whose target a paste hides.
    """
    h, w = shape[:2]
    ch, cw = cutout.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + cw, w), min(y + ch, h)
    hidden = np.zeros((h, w), np.uint8)
    if x1 > x0 and y1 > y0:
        hidden[y0:y1, x0:x1] = cutout[y0 - y : y1 - y, x0 - x : x1 - x, 3] == 255
    return hidden


def paste_pair(
    target: np.ndarray,
    cutout: np.ndarray,
    rng: np.random.Generator,
    label: str = "",
    dilation: int = 3,
    bucket: Bucket | None = None,
    fill_fraction: float | None = None,
    max_tries: int = PASTE_TRIES,
    max_side_fraction: float = 0.95,
    avoid: tuple[int, int, int, int] | None = None,
) -> Pair | None:
    """Paste ``cutout`` (RGBA, any size) at a random place and scale into ``target``.

    With ``bucket``, the scale is chosen so the dilated footprint's ratio falls inside it
    (rejection-sampled; ``None`` when ``max_tries`` fail, e.g. a bucket too large for the
    object's shape). ``fill_fraction`` is the share of the cut-out's box its alpha covers;
    measured from the cut-out when not given. The search is bounded by ``max_tries``: the
    caller decides what a miss means (the dataset makes a hole pair instead). ``avoid``
    (``x0, y0, x1, y1``): a box the mask must not touch (the twin of a same-image copy).
    """
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    h, w = target.shape[:2]
    total = h * w
    if fill_fraction is None:
        fill_fraction = max(float(np.count_nonzero(cutout[..., 3])) / cutout[..., 3].size, 1e-3)
    aspect = cutout.shape[1] / cutout.shape[0]
    for _ in range(max_tries):
        if bucket is None:
            ratio = float(rng.uniform(0.02, 0.3))
        else:
            lo, hi = bucket.bounds
            ratio = float(rng.uniform(lo, hi))
        # footprint ≈ fill · box area (+ a dilation ring); solve the box's height for it.
        area = ratio * total / fill_fraction
        ph = math.sqrt(area / aspect)
        ph -= 2 * dilation * 0.5  # the ring adds roughly dilation on each side
        pw = ph * aspect
        if ph < 3 or pw < 3 or ph > max_side_fraction * h or pw > max_side_fraction * w:
            continue
        size = (max(3, int(round(pw))), max(3, int(round(ph))))
        scaled = cv2.resize(cutout, size, interpolation=cv2.INTER_AREA)
        x = int(rng.integers(0, w - size[0] + 1))
        y = int(rng.integers(0, h - size[1] + 1))
        source, mask = paste_object(target, scaled, x, y, dilation)
        count = int(np.count_nonzero(mask))
        if count == 0 or count == total:
            continue
        if bucket is not None and not bucket.contains(count, total):
            continue
        if avoid is not None and mask[avoid[1] : avoid[3], avoid[0] : avoid[2]].any():
            continue
        hidden = opaque_pixels(target.shape, scaled, x, y)
        return Pair(source, mask, target, "paste", label, {"box": (x, y, *size)}, hidden)
    return None


def pair_bucket(pair: Pair, buckets: tuple[Bucket, ...]) -> int:
    return bucket_index(int(np.count_nonzero(pair.mask)), pair.mask.size, buckets)
