"""PSNR, SSIM, MAE and the composite against independent implementations on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from dcgd.errors import DataError
from dcgd.eval.metrics import composite, mae, psnr, ssim


def _unit_hwc(x: torch.Tensor) -> np.ndarray:
    return ((x.double().numpy() + 1) / 2).transpose(1, 2, 0)


@pytest.fixture(scope="module")
def scored(photos, masks):
    """A plausible prediction (blurred, noisy, over-range like a VAE output), composited."""
    gen = torch.Generator().manual_seed(0)
    blurred = torch.nn.functional.avg_pool2d(
        photos, 5, stride=1, padding=2, count_include_pad=False
    )
    pred = blurred + 0.1 * torch.randn(photos.shape, generator=gen)
    return composite(pred, photos, masks), photos


def test_psnr_and_mae_match_numpy_per_image(scored):
    result, target = scored
    ours_psnr, ours_mae = psnr(result, target), mae(result, target)
    assert ours_psnr.shape == (len(target),)
    for i in range(len(target)):
        a, b = _unit_hwc(result[i]), _unit_hwc(target[i])
        mse = np.mean((a - b) ** 2)
        assert ours_psnr[i].item() == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-4)
        assert ours_mae[i].item() == pytest.approx(np.mean(np.abs(a - b)), abs=1e-4)
    # Per image, then averaged: not torchmetrics' default of pooling the batch's MSE.
    pooled = 10 * np.log10(
        1.0
        / np.mean(
            [
                np.mean((_unit_hwc(r) - _unit_hwc(t)) ** 2)
                for r, t in zip(result, target, strict=True)
            ]
        )
    )
    assert abs(ours_psnr.mean().item() - pooled) > 1e-3


def test_ssim_matches_scikit_image_gaussian_protocol(scored):
    result, target = scored
    ours = ssim(result, target)
    for i in range(len(target)):
        reference = structural_similarity(
            _unit_hwc(result[i]),
            _unit_hwc(target[i]),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=2,
        )
        assert ours[i].item() == pytest.approx(reference, abs=1e-4)
    assert ssim(target, target).tolist() == pytest.approx([1.0] * len(target), abs=1e-6)


def test_composite_keeps_known_pixels_and_clamps_the_fill(photos, masks):
    pred = torch.full_like(photos, 1.7)  # a decoder overshoot
    result = composite(pred, photos, masks)
    outside = masks.expand_as(photos) == 0
    assert torch.equal(result[outside], photos[outside])
    assert torch.all(result[~outside] == 1.0)


def test_wrong_shapes_and_ranges_are_refused(photos, masks):
    with pytest.raises(DataError, match="differ"):
        composite(photos[:, :, :32], photos, masks)
    from dcgd.eval.evaluator import Evaluator

    evaluator = Evaluator(lpips=())
    with pytest.raises(DataError, match=r"\[-1,1\]"):
        evaluator.update(photos, (photos + 1) * 127.5, masks)  # a 0..255 target
