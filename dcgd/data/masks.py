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
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from dcgd.data.buckets import OUTSIDE, Bucket, bucket_index
from dcgd.errors import DataError

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
    dilation: pixels to grow the drawn mask by (elliptic kernel), before the ratio check.
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


def postprocess(mask: np.ndarray, dilation: int = 0, feather: int = 0) -> np.ndarray:
    """Dilate then feather (blur and re-threshold) a 0/1 ``uint8`` mask."""
    if dilation > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation + 1, 2 * dilation + 1))
        mask = cv2.dilate(mask, kernel)
    if feather > 0:
        # uint8 Gaussian blur is bit-exact in OpenCV, so this stays machine-independent.
        blurred = cv2.GaussianBlur(mask * 255, (2 * feather + 1, 2 * feather + 1), 0)
        mask = (blurred >= 128).astype(np.uint8)
    return mask


def _draw_stroke(mask: np.ndarray, rng: np.random.Generator, scale: float) -> Iterator[None]:
    """One LaMa-style stroke: a polyline of random count, segment length, width and angle."""
    h, w = mask.shape
    side = min(h, w)
    width = int(rng.integers(max(1, round(side * 0.02)), max(2, round(side * scale)) + 1))
    vertices = int(rng.integers(1, 6))
    x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
    angle = float(rng.uniform(0, 2 * math.pi))
    for _ in range(vertices):
        angle += float(rng.uniform(-math.pi / 3, math.pi / 3))  # strokes bend, they don't zigzag
        length = float(rng.uniform(0.05, 0.3)) * side
        nx = min(max(int(round(x + length * math.cos(angle))), 0), w - 1)
        ny = min(max(int(round(y + length * math.sin(angle))), 0), h - 1)
        cv2.line(mask, (x, y), (nx, ny), 1, width, lineType=cv2.LINE_8)
        x, y = nx, ny
        yield


def _draw_box(mask: np.ndarray, rng: np.random.Generator, max_area: float) -> Iterator[None]:
    h, w = mask.shape
    area = max(1.0, float(rng.uniform(0.3, 1.0)) * max_area)
    aspect = float(rng.uniform(0.5, 2.0))
    bw = min(w, max(1, int(round(math.sqrt(area * aspect)))))
    bh = min(h, max(1, int(round(area / bw))))
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    mask[y0 : y0 + bh, x0 : x0 + bw] = 1
    yield


def generate_mask(
    rng: np.random.Generator,
    size: tuple[int, int],
    bucket: Bucket,
    settings: MaskSettings = MaskSettings(),
    max_tries: int = 200,
) -> np.ndarray:
    """Draw shapes until the mask ratio reaches ``bucket.lo``; keep it if it is below ``bucket.hi``.

    Shapes are added one line segment (or box) at a time, so a mask rarely overshoots; when it
    does, it is rejected and a new one is drawn from the same generator.
    """
    h, w = size
    total = h * w
    lo = math.ceil(Fraction(bucket.lo) * total)
    gap = float(Fraction(bucket.hi) - Fraction(bucket.lo)) * total
    if lo >= total or Fraction(bucket.hi) * total <= lo:
        raise ValueError(f"bucket {bucket.name} holds no mask of {h}x{w} pixels")
    # Bigger buckets get thicker strokes, so big masks need fewer shapes.
    stroke_scale = 0.05 + 0.25 * min(float(bucket.hi), 1.0)
    for _ in range(max_tries):
        raw = np.zeros((h, w), np.uint8)
        mask = raw
        count = 0
        while count < lo:
            box = settings.kind == "boxes" or (
                settings.kind == "mixed" and rng.random() < settings.box_probability
            )
            steps = _draw_box(raw, rng, gap) if box else _draw_stroke(raw, rng, stroke_scale)
            for _ in steps:
                mask = postprocess(raw, settings.dilation, settings.feather)
                count = int(np.count_nonzero(mask))
                if count >= lo:
                    break
        if bucket.contains(count, total):
            return mask
    raise RuntimeError(f"no {h}x{w} mask landed in bucket {bucket.name} after {max_tries} tries")


def _bucket_key(bucket: Bucket) -> tuple[int, int]:
    # Millionths of the edges: the key names the bucket, not its position in a config list.
    return int(Fraction(bucket.lo) * 10**6), int(Fraction(bucket.hi) * 10**6)


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

    Each mask is resized to the working size with nearest-neighbour, binarised (``> 127`` is
    "remove"; ``invert=True`` for sets drawn black-on-white) and its ratio recomputed at that
    size: file order and names say nothing about the ratio.
    """

    def __init__(self, root: str | Path, invert: bool = False) -> None:
        self.root = Path(root)
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
        path = self.paths[i]
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise DataError(f"cannot decode mask {path}: the file is corrupt or not an image")
        if gray.shape != size:
            gray = cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        mask = (gray > 127).astype(np.uint8)
        return 1 - mask if self.invert else mask

    def by_bucket(self, size: tuple[int, int], buckets: tuple[Bucket, ...]) -> list[list[int]]:
        """Indices of the masks in each bucket at ``size`` (computed once per size)."""
        key = (size, buckets)
        if key not in self._by_bucket:
            groups: list[list[int]] = [[] for _ in buckets]
            for i in range(len(self.paths)):
                mask = self.load(i, size)
                b = bucket_index(int(np.count_nonzero(mask)), mask.size, buckets)
                if b != OUTSIDE:
                    groups[b].append(i)
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
        if not group:
            raise DataError(
                f"mask folder {self.root} has no mask in bucket {buckets[bucket].name} at "
                f"{size[0]}x{size[1]}; drop that bucket or add masks of that coverage"
            )
        return self.load(group[int(rng.integers(len(group)))], size)
