"""Mask-ratio buckets of the paper's Table 1, shared by data, evaluation and sweeps.

Buckets are half-open ``[lo, hi)``. Edges are compared exactly (as fractions of pixel counts),
so a ratio of exactly 0.1 lands in ``0.1-0.2`` on every machine, whatever the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import torch


@dataclass(frozen=True)
class Bucket:
    lo: str  # decimal strings keep the edges exact
    hi: str
    # The edges as exact fractions, parsed once (Fraction() is slow, and buckets are hot).
    lo_fraction: Fraction = field(init=False, repr=False, compare=False)
    hi_fraction: Fraction = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lo, hi = Fraction(self.lo), Fraction(self.hi)
        # A ratio is a share of the image: above 1 no mask reaches it, and the mask search
        # would add shapes forever.
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"bucket {self.lo}-{self.hi} needs 0 <= LO < HI <= 1")
        object.__setattr__(self, "lo_fraction", lo)
        object.__setattr__(self, "hi_fraction", hi)

    def count_range(self, total: int) -> tuple[int, int]:
        """Pixel counts ``[lo, hi)`` of a ``total``-pixel mask that fall in the bucket."""
        return math.ceil(self.lo_fraction * total), math.ceil(self.hi_fraction * total)

    @property
    def name(self) -> str:
        return f"{self.lo}-{self.hi}"

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.lo), float(self.hi)

    def contains(self, masked: int, total: int) -> bool:
        return self.lo_fraction * total <= masked < self.hi_fraction * total


PAPER_BUCKETS: tuple[Bucket, ...] = (
    Bucket("0.01", "0.1"),
    Bucket("0.1", "0.2"),
    Bucket("0.2", "0.3"),
    Bucket("0.3", "0.4"),
)
BUCKET_NAMES: tuple[str, ...] = tuple(b.name for b in PAPER_BUCKETS)
OUTSIDE = -1  # index of a mask that falls in no bucket


def parse_bucket(text: str) -> Bucket:
    """``"0.1-0.2"`` -> ``Bucket("0.1", "0.2")``; raises ValueError with the accepted form."""
    try:
        lo, hi = text.split("-")
        return Bucket(lo, hi)
    except (ValueError, ZeroDivisionError):  # Fraction("1/0") divides by zero
        raise ValueError(
            f"bad bucket {text!r}: write it as LO-HI mask ratios with 0 <= LO < HI <= 1, e.g. "
            f"0.1-0.2 (the paper's buckets are {', '.join(BUCKET_NAMES)})"
        ) from None


def bucket_index(masked: int, total: int, buckets: tuple[Bucket, ...] = PAPER_BUCKETS) -> int:
    """Index of the bucket holding ``masked / total``, or ``OUTSIDE``."""
    for i, bucket in enumerate(buckets):
        if bucket.contains(masked, total):
            return i
    return OUTSIDE


def mask_bucket(mask: torch.Tensor, buckets: tuple[Bucket, ...] = PAPER_BUCKETS) -> torch.Tensor:
    """Bucket index per mask of a ``[B,1,H,W]`` (or ``[B,H,W]``) binary batch, as ``[B]`` long."""
    flat = (mask.reshape(mask.shape[0], -1) > 0.5).sum(dim=1).tolist()
    total = mask[0].numel()
    return torch.tensor([bucket_index(int(m), total, buckets) for m in flat], dtype=torch.long)
