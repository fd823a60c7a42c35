"""Pairs: hole and paste, checked against straightforward whole-image formulas."""

from __future__ import annotations

import numpy as np
import pytest

from dcgd.data.buckets import PAPER_BUCKETS
from dcgd.data.masks import disc
from dcgd.data.pairs import hole_pair, opaque_pixels, paste_object, paste_pair
from dcgd.data.procedural import OBJECT_NAMES, alpha_fill, render_object

RNG = np.random.default_rng(0)


def reference_paste(target, cutout, x, y, dilation):
    """The paste written over the whole image, pixel by pixel in meaning: the footprint is every
    pixel within ``dilation`` of a non-transparent one; inside it, the object alpha-blended over
    the target, as a photo shows it (``alpha·colour + (1−alpha)·target``); outside it, the
    target. Also returns the opaque pixels (alpha 255), the ones whose target is hidden."""
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
    a = alpha[..., None]
    blended = np.rint(a * colour + (1 - a) * target)
    source = np.where(footprint[..., None], np.clip(blended, 0, 255), target)
    opaque = alpha == 1.0
    return source.astype(np.uint8), footprint.astype(np.uint8), opaque.astype(np.uint8)


def random_cutout(shape=(9, 11)):
    cutout = RNG.integers(0, 256, (*shape, 4), dtype=np.uint8)
    alpha = cutout[..., 3]
    alpha[RNG.random(shape) < 0.4] = 0  # holes in the alpha
    alpha[RNG.random(shape) < 0.3] = 255  # and opaque pixels
    return cutout


@pytest.mark.parametrize(("x", "y", "dilation"), [(5, 6, 0), (8, 3, 2), (-4, 20, 3), (22, 25, 1)])
def test_paste_object_matches_the_whole_image_formula(x, y, dilation):
    target = RNG.integers(0, 256, (30, 32, 3), dtype=np.uint8)
    cutout = random_cutout()
    source, mask = paste_object(target, cutout, x, y, dilation)
    expected_source, expected_mask, expected_hidden = reference_paste(
        target, cutout, x, y, dilation
    )
    assert np.array_equal(mask, expected_mask)
    # float32 here, float64 in the reference: a rounding tie may land one step apart.
    assert np.abs(source.astype(int) - expected_source.astype(int)).max() <= 1
    assert np.array_equal(source[mask == 0], target[mask == 0])
    hidden = opaque_pixels(target.shape, cutout, x, y)
    assert np.array_equal(hidden, expected_hidden)
    assert not (hidden & (1 - mask)).any()  # hidden ⊆ mask


@pytest.mark.parametrize(("x", "y", "dilation"), [(5, 6, 0), (8, 3, 2), (-4, 20, 3), (22, 25, 1)])
def test_paste_shows_the_target_off_the_object_and_the_object_where_opaque(x, y, dilation):
    # A real photo: the background exactly, wherever the object does not reach (the dilation
    # ring included); the cut-out's colour exactly where it is opaque.
    target = RNG.integers(0, 256, (30, 32, 3), dtype=np.uint8)
    cutout = random_cutout()
    source, mask = paste_object(target, cutout, x, y, dilation)
    _, _, opaque = reference_paste(target, cutout, x, y, dilation)
    alpha = np.zeros(target.shape[:2], np.uint8)
    colour = np.zeros_like(target)
    h, w = target.shape[:2]
    for cy in range(cutout.shape[0]):
        for cx in range(cutout.shape[1]):
            if 0 <= y + cy < h and 0 <= x + cx < w:
                alpha[y + cy, x + cx] = cutout[cy, cx, 3]
                colour[y + cy, x + cx] = cutout[cy, cx, :3]
    assert opaque.any() and ((alpha > 0) & (alpha < 255)).any()  # both cases exercised
    off = alpha == 0
    assert np.array_equal(source[off], target[off])
    assert np.array_equal(source[alpha == 255], colour[alpha == 255])
    if dilation > 0:
        ring = (mask == 1) & off
        assert ring.any() and np.array_equal(source[ring], target[ring])


def test_hole_pair_cuts_the_hole_out():
    target = RNG.integers(1, 256, (8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 3:6] = 1
    pair = hole_pair(target, mask)
    assert (pair.source[mask == 1] == 0).all()
    assert np.array_equal(pair.source[mask == 0], target[mask == 0])
    assert pair.kind == "hole" and pair.object_label == ""
    assert np.array_equal(pair.hidden, mask)  # nothing of the target shows in the hole


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
            assert pair.hidden.any() and not pair.hidden[pair.mask == 0].any()  # hidden ⊆ mask
    assert made >= 20  # 24 asked for: nearly every shape fits buckets up to 0.3 at 64 px


def test_disc_is_the_euclidean_disc():
    assert disc(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert int(disc(3).sum()) == sum(
        1 for dy in range(-3, 4) for dx in range(-3, 4) if dx * dx + dy * dy <= 9
    )
