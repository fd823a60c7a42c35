"""The two images CLIP sees: the masked region and the context, both cut from ``source``."""

from __future__ import annotations

import torch

from dcgd.describe.regions import context_images, mask_boxes, region_has_content, region_images


def _batch():
    gen = torch.Generator().manual_seed(0)
    source = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 4:12, 20:26] = 1  # an 8x6 object near the top right
    mask[1, :, 10:30, 2:30] = 1
    return source, mask


def test_boxes_are_squares_around_the_mask_with_a_margin():
    _, mask = _batch()
    boxes = mask_boxes(mask, margin=0.25)
    x1, y1, x2, y2 = boxes[0].tolist()
    assert x2 - x1 == y2 - y1 == 8 * 1.5  # longer side 8, plus 25% on each side
    assert (x1 + x2) / 2 == 23 and (y1 + y2) / 2 == 8  # centred on the mask's box
    assert mask_boxes(torch.zeros(1, 1, 32, 32)).tolist() == [[0, 0, 32, 32]]  # empty: all


def test_region_sees_only_the_pixels_under_the_mask():
    source, mask = _batch()
    region = region_images(source, mask, 16)
    outside = source.clone()
    outside[mask.expand_as(source) == 0] = 0.7  # change everything outside the mask
    torch.testing.assert_close(region_images(outside, mask, 16), region)
    inside = source.clone()
    inside[mask.expand_as(source) > 0] = 0.7
    assert not torch.allclose(region_images(inside, mask, 16)[0], region[0])
    assert region[0, :, 0, 0].abs().max() < 1e-6  # the margin reads as the neutral fill


def test_context_never_sees_the_pixels_under_the_mask():
    source, mask = _batch()
    context = context_images(source, mask, 16)
    inside = source.clone()
    inside[mask.expand_as(source) > 0] = 0.7
    torch.testing.assert_close(context_images(inside, mask, 16), context)
    assert context_images(source, mask, 32)[0, :, 5, 22].abs().max() == 0  # the hole is grey


def test_a_hole_has_no_content_an_object_has():
    source, mask = _batch()
    hole = source * (1 - mask) - mask  # a hole pair: black inside the mask
    assert region_has_content(source, mask).tolist() == [True, True]
    assert region_has_content(hole, mask).tolist() == [False, False]
