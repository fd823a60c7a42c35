"""Pairs: hole and paste, checked against straightforward whole-image formulas."""

from __future__ import annotations

import numpy as np
import pytest

from dcgd.data.buckets import PAPER_BUCKETS
from dcgd.data.masks import disc
from dcgd.data.pairs import hole_pair, paste_object, paste_pair
from dcgd.data.procedural import OBJECT_NAMES, alpha_fill, render_object

RNG = np.random.default_rng(0)


def reference_paste(target, cutout, x, y, dilation):
    """The paste written over the whole image, pixel by pixel in meaning: the footprint is every
    pixel within ``dilation`` of a non-transparent one; inside it, the object over grey."""
    h, w = target.shape[:2]
    alpha = np.zeros((h, w), np.float64)
    colour = np.zeros((h, w, 3), np.float64)
    for cy in range(cutout.shape[0]):
        for cx in range(cutout.shape[1]):
            if 0 <= y + cy < h and 0 <= x + cx < w:
                alpha[y + cy, x + cx] = cutout[cy, cx, 3] / 255
                colour[y + cy, x + cx] = cutout[cy, cx, :3]
    footprint = np.zeros((h, w), bool)
    for py, px in zip(*np.nonzero(alpha > 0), strict=True):
        yy, xx = np.mgrid[0:h, 0:w]
        footprint |= (yy - py) ** 2 + (xx - px) ** 2 <= dilation**2
    grey = np.rint(127.5 * (1 - alpha[..., None]) + colour * alpha[..., None])
    source = np.where(footprint[..., None], np.clip(grey, 0, 255), target)
    return source.astype(np.uint8), footprint.astype(np.uint8)


@pytest.mark.parametrize(("x", "y", "dilation"), [(5, 6, 0), (8, 3, 2), (-4, 20, 3), (22, 25, 1)])
def test_paste_object_matches_the_whole_image_formula(x, y, dilation):
    target = RNG.integers(0, 256, (30, 32, 3), dtype=np.uint8)
    cutout = RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    cutout[..., 3] = np.where(RNG.random((9, 11)) < 0.4, 0, cutout[..., 3])  # holes in the alpha
    source, mask = paste_object(target, cutout, x, y, dilation)
    expected_source, expected_mask = reference_paste(target, cutout, x, y, dilation)
    assert np.array_equal(mask, expected_mask)
    # float32 here, float64 in the reference: a rounding tie may land one step apart.
    assert np.abs(source.astype(int) - expected_source.astype(int)).max() <= 1
    assert np.array_equal(source[mask == 0], target[mask == 0])


def test_hole_pair_cuts_the_hole_out():
    target = RNG.integers(1, 256, (8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 3:6] = 1
    pair = hole_pair(target, mask)
    assert (pair.source[mask == 1] == 0).all()
    assert np.array_equal(pair.source[mask == 0], target[mask == 0])
    assert pair.kind == "hole" and pair.object_label == ""


def test_paste_pairs_land_in_the_bucket_asked_for():
    target = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    made = 0
    for i, label in enumerate(OBJECT_NAMES):
        rng = np.random.default_rng(i)
        for bucket in PAPER_BUCKETS[:3]:
            cutout = render_object(label, 96, rng)
            pair = paste_pair(target, cutout, rng, label, 3, bucket, alpha_fill(label))
            if pair is None:  # this shape cannot cover the bucket: the caller falls back
                continue
            made += 1
            assert bucket.contains(int(pair.mask.sum()), pair.mask.size)
            assert pair.kind == "paste" and pair.object_label == label
            assert np.array_equal(pair.target, target)
            # The footprint holds the object: every opaque pixel is inside the mask.
            x, y, w, h = pair.meta["box"]
            assert pair.mask[y : y + h, x : x + w].sum() > 0
    assert made >= 20  # 24 asked for: nearly every shape fits buckets up to 0.3 at 64 px


def test_disc_is_the_euclidean_disc():
    assert disc(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert int(disc(3).sum()) == sum(
        1 for dy in range(-3, 4) for dx in range(-3, 4) if dx * dx + dy * dy <= 9
    )
