"""Context windows for images of any size: placement, mirrored padding, paste under the mask."""

from __future__ import annotations

import numpy as np
import pytest

from dcgd.sampling.windows import Window, context_window, crop, paste, resize_mask


def _mask(h, w, y0, y1, x0, x1):
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


@pytest.mark.parametrize(
    ("shape", "box", "resolution", "side"),
    [
        ((400, 600), (150, 190, 200, 230), 64, 80),  # box 40 x 2
        ((400, 600), (150, 160, 200, 205), 64, 64),  # a small hole: native resolution
        ((400, 600), (0, 400, 0, 10), 64, 800),  # taller than the image: padded
        ((40, 30), (10, 12, 10, 12), 64, 40),  # image smaller than the model: its long side
    ],
)
def test_window_holds_the_mask_with_context(shape, box, resolution, side):
    mask = _mask(*shape, *box)
    window = context_window(mask, resolution, context=2.0)
    assert window.side == side
    y0, y1, x0, x1 = box
    assert window.top <= y0 and y1 <= window.top + window.side
    assert window.left <= x0 and x1 <= window.left + window.side
    h, w = shape
    if side <= h:
        assert 0 <= window.top <= h - side  # inside the image where it fits
    if side <= w:
        assert 0 <= window.left <= w - side


def test_window_near_the_border_is_shifted_inside():
    window = context_window(_mask(400, 600, 0, 20, 590, 600), 64, context=2.0)
    assert window == Window(top=0, left=536, side=64)


def test_crop_mirrors_beyond_the_border():
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    window = Window(top=-2, left=1, side=6)
    out = crop(image, window)
    assert out.shape == (6, 6, 3)
    want = np.pad(image, ((2, 0), (0, 2), (0, 0)), mode="symmetric")[:, 1:7]
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(out[2:6, 0:4], image[:, 1:5])


def test_paste_writes_under_the_mask_only():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    mask = _mask(30, 50, 5, 20, 10, 30)
    mask[12, 40] = 1
    window = Window(top=-5, left=5, side=40)
    result = np.full((16, 16, 3), 7, np.uint8)  # the model's output at its resolution
    out = paste(image, result, mask, window)
    inside = mask.astype(bool)
    np.testing.assert_array_equal(out[~inside], image[~inside])
    assert (out[inside] == 7).all()


def test_resized_mask_covers_every_partially_masked_pixel():
    mask = np.zeros((100, 100), np.uint8)
    mask[:, 50] = 1  # one pixel wide: nearest-neighbour shrinking would lose it
    small = resize_mask(mask, 32)
    assert small.any(axis=0).sum() >= 1 and small[:, 16].all()
    big = resize_mask(_mask(8, 8, 2, 4, 2, 4), 32)
    assert big[8:16, 8:16].all()
