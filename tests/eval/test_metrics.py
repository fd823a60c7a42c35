"""PSNR, SSIM, MAE and the composite against independent implementations (numpy,
scikit-image) on real photographs with real masks from the project's mask generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from dcgd.errors import DataError
from dcgd.eval.baselines import telea
from dcgd.eval.evaluator import Evaluator
from dcgd.eval.metrics import mae, psnr, ssim
from dcgd.method.input import composite
from tests.eval.helpers import mask_batch, photo_batch


def _unit_hwc(x: torch.Tensor) -> np.ndarray:
    return ((x.double().numpy() + 1) / 2).transpose(1, 2, 0)


def _numpy_composite(pred: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """The composite, independently: numpy, on [0,1], prediction clipped like a saved image."""
    p = np.clip(_unit_hwc(pred), 0, 1)
    s, m = _unit_hwc(source), mask.double().numpy().transpose(1, 2, 0)
    return m * p + (1 - m) * s


@pytest.fixture(scope="module", params=[64, 256], ids=["64px", "256px"])
def case(request):
    """Photos, real masks, and two plausible predictions: OpenCV Telea on the holed photo, and
    a blurred, noisy, over-range fill like a VAE decoder's."""
    size = request.param
    photos, masks = photo_batch(size), mask_batch(size)
    holed = photos * (1 - masks)
    gen = torch.Generator().manual_seed(0)
    blurred = torch.nn.functional.avg_pool2d(photos, 5, 1, 2, count_include_pad=False)
    vae_like = 1.15 * blurred + 0.1 * torch.randn(photos.shape, generator=gen)
    return photos, masks, {"telea": telea().inpaint(holed, masks), "vae_like": vae_like}


def test_psnr_and_mae_match_numpy_per_image(case):
    photos, masks, preds = case
    for pred in preds.values():
        result = composite(pred, photos, masks)
        ours_psnr, ours_mae = psnr(result, photos), mae(result, photos)
        assert ours_psnr.shape == ours_mae.shape == (len(photos),)
        for i in range(len(photos)):
            a, b = _numpy_composite(pred[i], photos[i], masks[i]), _unit_hwc(photos[i])
            mse = np.mean((a - b) ** 2)
            # float32 against numpy's float64: ~1e-5 dB, from rounding the pixels to float32
            # (the same on every CPU), ~1e-6 from the order of the float32 sums.
            assert ours_psnr[i].item() == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-4)
            assert ours_mae[i].item() == pytest.approx(np.mean(np.abs(a - b)), abs=1e-4)


def test_psnr_is_per_image_then_averaged_not_pooled(case):
    photos, masks, preds = case
    result = composite(preds["vae_like"], photos, masks)
    mses = [
        np.mean((_unit_hwc(r) - _unit_hwc(t)) ** 2) for r, t in zip(result, photos, strict=True)
    ]
    per_image = np.mean([10 * np.log10(1.0 / m) for m in mses])
    pooled = 10 * np.log10(1.0 / np.mean(mses))  # torchmetrics' default reduction
    assert psnr(result, photos).double().mean().item() == pytest.approx(per_image, abs=1e-4)
    assert abs(per_image - pooled) > 1e-2  # the two protocols differ on these images


def test_ssim_matches_scikit_image_gaussian_protocol(case):
    photos, masks, preds = case
    for pred in preds.values():
        result = composite(pred, photos, masks)
        ours = ssim(result, photos)
        for i in range(len(photos)):
            reference = structural_similarity(
                _numpy_composite(pred[i], photos[i], masks[i]),
                _unit_hwc(photos[i]),
                gaussian_weights=True,  # 11x11 window: radius int(3.5 * 1.5 + 0.5) = 5
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                channel_axis=2,
            )
            # float32 against float64: ~1e-5 at most; the sample covariance (another
            # protocol) would be 1e-4 to 1e-3 off.
            assert ours[i].item() == pytest.approx(reference, abs=1e-4)
    assert ssim(photos, photos).tolist() == pytest.approx([1.0] * len(photos), abs=1e-6)


def test_evaluator_scores_the_composite_not_the_raw_prediction(case):
    photos, masks, preds = case
    pred = preds["vae_like"]
    scores = Evaluator(lpips=()).score(pred, photos, masks, source=photos)
    for i in range(len(photos)):
        a, b = _numpy_composite(pred[i], photos[i], masks[i]), _unit_hwc(photos[i])
        assert scores["mae"][i].item() == pytest.approx(np.mean(np.abs(a - b)), abs=1e-4)
    raw = mae(pred.clamp(-1, 1), photos)  # what scoring without compositing would give
    assert torch.all(scores["mae"] < raw - 1e-3)


def test_composite_keeps_known_pixels_and_clamps_the_fill(photos, masks):
    pred = torch.full_like(photos, 1.7)  # a decoder overshoot
    result = composite(pred, photos, masks)
    outside = masks.expand_as(photos) == 0
    assert torch.equal(result[outside], photos[outside])
    assert torch.all(result[~outside] == 1.0)


def test_wrong_shapes_ranges_and_sizes_are_refused(photos, masks):
    with pytest.raises(DataError, match="differ"):
        composite(photos[:, :, :32], photos, masks)
    evaluator = Evaluator(lpips=())
    with pytest.raises(DataError, match=r"\[-1,1\]"):
        evaluator.update(photos, (photos + 1) * 127.5, masks)  # a 0..255 target
    with pytest.raises(DataError, match="larger than 11x11"):
        ssim(photos[..., :10, :10], photos[..., :10, :10])
