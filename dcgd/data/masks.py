"""Masks: LaMa-style strokes and boxes, rejection-sampled into a ratio bucket; mask folders.

An evaluation mask is a pure function of ``(index, seed)``: its random generator is built from
those two integers alone (``numpy``'s PCG64 gives the same stream on every platform) and the
drawing is integer ``cv2`` rasterisation, so the mask is the same on every machine, worker and
DDP rank. Masks are ``uint8`` arrays of 0/1 (1 = remove / fill).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dcgd.data.buckets import OUTSIDE, Bucket, bucket_index
from dcgd.data.images import load_mask
from dcgd.errors import ConfigError, DataError

MASK_KINDS = ("strokes", "boxes", "mixed")
MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Streams keep the random numbers of different purposes apart for the same (seed, index).
STREAM_EVAL_MASK = 1
STREAM_EVAL_SAMPLE = 2
STREAM_TRAIN = 3


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (non-negative ints)."""
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seeds and keys must be non-negative, got seed={seed}, keys={keys}")
    return np.random.default_rng([int(seed), *map(int, keys)])


@dataclass(frozen=True)
class MaskSettings:
    """How generated masks look.

    kind: ``strokes`` (irregular brush strokes), ``boxes`` or ``mixed`` (each shape is a box
        with probability ``box_probability``, else a stroke).
    dilation: pixels to grow the drawn mask by (every pixel within that distance), before the
        ratio check.
    feather: Gaussian radius in pixels that rounds jagged edges; the mask is re-binarised at
        0.5 so it stays in {0, 1}.
    """

    kind: str = "mixed"
    box_probability: float = 0.25
    dilation: int = 0
    feather: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(f"mask kind {self.kind!r} is not one of {', '.join(MASK_KINDS)}")
        if not 0.0 <= self.box_probability <= 1.0:
            raise ValueError(f"box_probability must be in [0, 1], got {self.box_probability}")
        if self.dilation < 0 or self.feather < 0:
            raise ValueError("mask dilation and feather are pixel counts, they cannot be negative")


def disc(radius: int) -> np.ndarray:
    """The pixels within Euclidean distance ``radius`` of the centre, as a ``uint8`` kernel.

    (OpenCV's ``MORPH_ELLIPSE`` is coarser: its 9x9 kernel reaches (3, 3), 4.24 px away.)
    """
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (dx * dx + dy * dy <= radius * radius).astype(np.uint8)


def postprocess(mask: np.ndarray, dilation: int = 0, feather: int = 0) -> np.ndarray:
    """Dilate then feather (blur and re-threshold) a 0/1 ``uint8`` mask."""
    if dilation > 0:
        mask = cv2.dilate(mask, disc(dilation))
    if feather > 0:
        # uint8 Gaussian blur is bit-exact in OpenCV, so this stays machine-independent.
        blurred = cv2.GaussianBlur(mask * 255, (2 * feather + 1, 2 * feather + 1), 0)
        mask = (blurred >= 128).astype(np.uint8)
    return mask


# Stroke directions in 5 degree steps, rounded to 6 decimals: the mask must not depend on the
# last bit of a platform's libm cos/sin (only IEEE-exact + - * / are used after this).
_TURNS = 72
_DIRECTIONS = tuple(
    (round(math.cos(2 * math.pi * k / _TURNS), 6), round(math.sin(2 * math.pi * k / _TURNS), 6))
    for k in range(_TURNS)
)
_MAX_BEND = 12  # +-60 degrees per vertex: strokes bend, they don't zigzag


def _draw_stroke(mask: np.ndarray, rng: np.random.Generator, scale: float) -> Iterator[None]:
    """One LaMa-style stroke: a polyline of random count, segment length, width and angle."""
    h, w = mask.shape
    side = min(h, w)
    lo_width, hi_width = max(1, round(side * 0.02)), max(2, round(side * scale))
    vertices = int(rng.integers(1, 6))
    # All numbers of the stroke in one draw: per-number generator calls dominated the cost.
    u = rng.random(4 + 2 * vertices).tolist()
    width = lo_width + int(u[0] * (hi_width - lo_width + 1))
    x, y = int(u[1] * w), int(u[2] * h)
    direction = int(u[3] * _TURNS)
    for k in range(vertices):
        direction = (direction + int(u[4 + 2 * k] * (2 * _MAX_BEND + 1)) - _MAX_BEND) % _TURNS
        length = (0.05 + 0.25 * u[5 + 2 * k]) * side
        dx, dy = _DIRECTIONS[direction]
        nx = min(max(round(x + length * dx), 0), w - 1)
        ny = min(max(round(y + length * dy), 0), h - 1)
        cv2.line(mask, (x, y), (nx, ny), 1, width, lineType=cv2.LINE_8)
        x, y = nx, ny
        yield


def _draw_box(mask: np.ndarray, rng: np.random.Generator, max_area: float) -> Iterator[None]:
    h, w = mask.shape
    u = rng.random(4).tolist()
    area = max(1.0, (0.3 + 0.7 * u[0]) * max_area)
    aspect = 0.5 + 1.5 * u[1]
    bw = min(w, max(1, round(math.sqrt(area * aspect))))
    bh = min(h, max(1, round(area / bw)))
    x0, y0 = int(u[2] * (w - bw + 1)), int(u[3] * (h - bh + 1))
    mask[y0 : y0 + bh, x0 : x0 + bw] = 1
    yield


# Shapes one mask may draw, over all its tries. Far above what a mask that lands needs (the
# hardest measured, 99-100% coverage out of boxes at 512 px, ~56k in one try), it bounds the
# work whatever the settings: the search ends in an error naming what to change, never in a
# process spinning at 100% CPU.
MAX_SHAPES = 200_000

# What to change when no mask lands, as the masks command and the data config spell it.
_SETTINGS_HINT = (
    "(masks: --size, --dilation, --feather, --kind, --bucket; "
    "data: size, mask_dilation, mask_feather, mask_kind, buckets)"
)


def generate_mask(
    rng: np.random.Generator,
    size: tuple[int, int],
    bucket: Bucket,
    settings: MaskSettings = MaskSettings(),
    max_tries: int = 200,
    max_shapes: int = MAX_SHAPES,
) -> np.ndarray:
    """A mask whose ratio lies in ``bucket``, drawn by ``rng``.

    Each try first draws a target pixel count uniformly inside the bucket, then adds shapes one
    line segment (or box) at a time until the count reaches it. Stopping at the bucket's lower
    edge instead would pile every mask up just above it (a "0.3-0.4" set of 0.30-0.32 masks).
    A try that overshoots the upper edge is rejected and a new one drawn from the same
    generator, so the result is still a pure function of ``rng``'s state. After ``max_tries``
    tries, or ``max_shapes`` shapes over all tries: a ConfigError.
    """
    if max_tries < 1 or max_shapes < 1:
        raise ValueError(f"max_tries and max_shapes must be >= 1, got {max_tries}, {max_shapes}")
    h, w = size
    total = h * w
    lo, hi = bucket.count_range(total)  # counts in the bucket: lo <= count < hi
    if lo >= hi or lo >= total:
        raise ConfigError(
            f"bucket {bucket.name} holds no mask of {h}x{w} pixels; use a larger size"
        )
    gap = float(bucket.hi_fraction - bucket.lo_fraction) * total
    # Bigger buckets get thicker strokes, so big masks need fewer shapes.
    stroke_scale = 0.05 + 0.25 * min(float(bucket.hi), 1.0)
    drawn = 0
    for tries in range(1, max_tries + 1):
        target = max(1, int(rng.integers(lo, hi)))
        raw = np.zeros((h, w), np.uint8)
        mask = raw
        count = 0
        while count < target:
            if drawn == max_shapes:
                raise ConfigError(
                    f"no {h}x{w} {settings.kind} mask landed in bucket {bucket.name}: "
                    f"{max_shapes} shapes over {tries} tries did not cover it (dilation "
                    f"{settings.dilation}, feather {settings.feather}); the bucket is too full "
                    "for these shapes at this size: use a lower or wider bucket, another "
                    f"kind or a smaller size {_SETTINGS_HINT}"
                )
            drawn += 1
            box = settings.kind == "boxes" or (
                settings.kind == "mixed" and rng.random() < settings.box_probability
            )
            steps = _draw_box(raw, rng, gap) if box else _draw_stroke(raw, rng, stroke_scale)
            for _ in steps:
                mask = postprocess(raw, settings.dilation, settings.feather)
                count = int(np.count_nonzero(mask))
                if count >= target:
                    break
        if lo <= count < hi:
            return mask
    raise ConfigError(
        f"no {h}x{w} {settings.kind} mask landed in bucket {bucket.name} after {max_tries} "
        f"tries (dilation {settings.dilation}, feather {settings.feather}); the bucket is too "
        "narrow for these settings at this size: use a larger size, less dilation or "
        f"feathering, or a wider bucket {_SETTINGS_HINT}"
    )


def _bucket_key(bucket: Bucket) -> tuple[int, int]:
    # Millionths of the edges: the key names the bucket, not its position in a config list.
    return int(bucket.lo_fraction * 10**6), int(bucket.hi_fraction * 10**6)


def eval_mask(
    index: int,
    seed: int,
    size: tuple[int, int],
    bucket: Bucket,
    settings: MaskSettings = MaskSettings(),
    split: int = 0,
) -> np.ndarray:
    """Evaluation mask number ``index`` of ``bucket``: a pure function of its arguments.

    ``split`` 0 is the test set (and ``python -m dcgd masks``), 1 the validation set.
    """
    rng = seeded_rng(seed, STREAM_EVAL_MASK, split, *_bucket_key(bucket), index)
    return generate_mask(rng, size, bucket, settings)


def mask_ratio(mask: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) / mask.size


class MaskFolder:
    """Mask images on disk (e.g. the NVIDIA irregular mask set), selected by ratio bucket.

    Each mask is decoded like any mask file (:func:`dcgd.data.images.load_mask`: white = remove,
    ``invert=True`` for sets drawn black-on-white), resized to the working size with
    nearest-neighbour and its ratio recomputed at that size: file order and names say nothing
    about the ratio, and resizing changes it. Empty and full masks are left out.
    """

    def __init__(self, root: str | Path, invert: bool = False) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"mask folder {self.root} does not exist; point mask_folder at a directory of "
                f"mask images ({', '.join(MASK_EXTENSIONS)})"
            )
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in MASK_EXTENSIONS)
        if not self.paths:
            raise DataError(
                f"mask folder {self.root} holds no mask images ({', '.join(MASK_EXTENSIONS)})"
            )
        self.invert = invert
        self._by_bucket: dict[tuple[tuple[int, int], tuple[Bucket, ...]], list[list[int]]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int, size: tuple[int, int]) -> np.ndarray:
        """Mask ``i`` at ``size`` (h, w) as 0/1 ``uint8``."""
        mask = load_mask(self.paths[i])
        if self.invert:
            mask = 1 - mask
        if mask.shape != tuple(size):
            mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)
        return mask

    def by_bucket(self, size: tuple[int, int], buckets: tuple[Bucket, ...]) -> list[list[int]]:
        """Indices of the masks in each bucket at ``size`` (computed once per size).

        Every mask is read once here: call it before DataLoader workers start, so they inherit
        the result instead of each re-reading the folder. A mask that cannot be read is an
        error, not a skip: it would silently change the evaluation set.
        """
        key = (tuple(size), buckets)
        if key not in self._by_bucket:
            groups: list[list[int]] = [[] for _ in buckets]
            for i in range(len(self.paths)):
                mask = self.load(i, size)
                count = int(np.count_nonzero(mask))
                if count == 0 or count == mask.size:
                    continue
                b = bucket_index(count, mask.size, buckets)
                if b != OUTSIDE:
                    groups[b].append(i)
            empty = [buckets[b].name for b, group in enumerate(groups) if not group]
            if empty:
                raise DataError(
                    f"mask folder {self.root} has no mask in bucket(s) {', '.join(empty)} at "
                    f"{size[1]}x{size[0]} (ratios are measured after resizing, empty and full "
                    "masks are left out); drop those buckets or add masks of that coverage"
                    + ("" if self.invert else " (black-on-white masks need invert_masks: true)")
                )
            self._by_bucket[key] = groups
        return self._by_bucket[key]

    def pick(
        self,
        rng: np.random.Generator,
        size: tuple[int, int],
        buckets: tuple[Bucket, ...],
        bucket: int,
    ) -> np.ndarray:
        """A mask of bucket number ``bucket``, chosen by ``rng``."""
        group = self.by_bucket(size, buckets)[bucket]
        return self.load(group[int(rng.integers(len(group)))], size)
