"""Decoding: every file ends as uint8 RGB (or 0/1 masks), or a DataError naming it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from dcgd.data.images import (
    center_crop,
    flatten_alpha,
    load_image_and_mask,
    load_mask,
    load_rgb,
    load_rgba,
    random_crop,
    to_tensor,
)
from dcgd.errors import DataError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)


def save_pil(path, array, mode=None):
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_rgb_png_round_trips(tmp_path):
    assert np.array_equal(load_rgb(save_pil(tmp_path / "a.png", RGB)), RGB)


def test_grayscale_is_repeated_to_three_channels(tmp_path):
    gray = RGB[..., 0]
    out = load_rgb(save_pil(tmp_path / "g.png", gray))
    assert out.shape == (6, 9, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[..., c], gray) for c in range(3))


def test_rgba_is_flattened_on_white(tmp_path):
    alpha = RNG.integers(0, 256, (6, 9), dtype=np.uint8)
    rgba = np.dstack([RGB, alpha])
    out = load_rgb(save_pil(tmp_path / "a.png", rgba))
    a = alpha[..., None] / 255.0
    expected = np.rint(RGB * a + 255.0 * (1 - a)).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1  # float32 vs float64 rounding
    assert np.array_equal(load_rgba(tmp_path / "a.png"), rgba)
    black = flatten_alpha(rgba, (0, 0, 0))
    assert np.abs(black.astype(int) - np.rint(RGB * a).astype(int)).max() <= 1


def test_16_bit_files_are_scaled_not_truncated(tmp_path):
    # PIL on its own keeps the high byte of 16-bit colour (or clips gray at 255).
    colour = RNG.integers(0, 65536, (6, 9, 3), dtype=np.uint16)
    gray = RNG.integers(0, 65536, (6, 9), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c.png"), colour[..., ::-1])
    cv2.imwrite(str(tmp_path / "c.tif"), colour[..., ::-1])
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    expect = np.rint(colour / 257.0).astype(np.uint8)
    assert np.array_equal(load_rgb(tmp_path / "c.png"), expect)
    assert np.array_equal(load_rgb(tmp_path / "c.tif"), expect)
    assert np.array_equal(load_rgb(tmp_path / "g.png")[..., 1], np.rint(gray / 257.0))


def test_palette_images_keep_their_colours(tmp_path):
    image = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    image.save(tmp_path / "p.png")
    assert np.array_equal(load_rgb(tmp_path / "p.png"), np.asarray(image.convert("RGB")))


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_truncated_and_corrupt_files_name_the_file(tmp_path, ext):
    ok, data = cv2.imencode(f".{ext}", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(DataError, match=rf"cannot decode image .*cut\.{ext}.*truncated"):
        load_rgb(path)
    junk = tmp_path / f"junk.{ext}"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(DataError, match=r"junk.*corrupt or truncated; re-extract"):
        load_rgb(junk)


def test_missing_and_floating_point_files(tmp_path):
    with pytest.raises(DataError, match="does not exist; check the dataset root"):
        load_rgb(tmp_path / "nope.png")
    Image.fromarray(np.zeros((4, 4), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(DataError, match="floating-point pixels"):
        load_rgb(tmp_path / "f.tif")


def test_masks_are_white_is_remove(tmp_path):
    mask = np.zeros((6, 9), np.uint8)
    mask[2:4, 3:7] = 255
    mask[0, 0] = 120  # a grey JPEG-ish pixel below half stays "keep"
    save_pil(tmp_path / "m.png", mask)
    out = load_mask(tmp_path / "m.png")
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    assert out.sum() == 8 and out[0, 0] == 0


def test_image_and_mask_checks(tmp_path):
    save_pil(tmp_path / "i.png", RGB)
    good = np.zeros((6, 9), np.uint8)
    good[1:3, 1:3] = 255
    save_pil(tmp_path / "good.png", good)
    image, mask = load_image_and_mask(tmp_path / "i.png", tmp_path / "good.png")
    assert mask.sum() == 4 and image.shape == (6, 9, 3)

    save_pil(tmp_path / "small.png", np.full((5, 9), 255, np.uint8))
    with pytest.raises(DataError, match=r"mask .*small.png is 9x5 but its image .* is 9x6"):
        load_image_and_mask(tmp_path / "i.png", tmp_path / "small.png")
    save_pil(tmp_path / "empty.png", np.zeros((6, 9), np.uint8))
    with pytest.raises(DataError, match="is empty .* nothing to remove"):
        load_image_and_mask(tmp_path / "i.png", tmp_path / "empty.png")
    save_pil(tmp_path / "full.png", np.full((6, 9), 255, np.uint8))
    with pytest.raises(DataError, match="covers the whole image"):
        load_image_and_mask(tmp_path / "i.png", tmp_path / "full.png")


def test_crops_and_tensors():
    image = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert center_crop(image, 40).shape == (40, 40, 3)
    assert np.array_equal(center_crop(image, 40), image[:, 10:50])  # no resize needed
    crop = random_crop(image, 32, np.random.default_rng(0))
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    tensor = to_tensor(np.array([[[0, 255, 127]]], np.uint8))
    assert tensor.shape == (3, 1, 1)
    assert tensor.flatten().tolist() == pytest.approx([-1.0, 1.0, 127 / 127.5 - 1])
