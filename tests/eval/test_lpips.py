"""LPIPS: the same numbers as the ``lpips`` package on the same backbone weights, inputs in
[-1,1], and left out (never faked) when the pretrained weights are missing.

The backbones here are seeded random networks under torchvision's file names (see
``helpers.py``): right for testing loading and wiring, never a reportable LPIPS.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from dcgd.errors import DataError, ModelLoadError
from dcgd.eval.baselines import telea
from dcgd.eval.evaluator import Evaluator
from dcgd.eval.metrics import LPIPS_BACKBONE_URLS, LPIPSScorer, MetricUnavailableWarning, load_lpips
from dcgd.method.input import composite
from tests.eval.helpers import save_backbone


def _reference(net: str) -> torch.nn.Module:
    """The lpips package itself: torchvision loads the backbone from $TORCH_HOME's hub cache
    (the same file), lpips slices it and loads its own v0.1 linear layers."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lpips.LPIPS(net=net, verbose=False).eval()


@pytest.fixture(scope="module")
def inpainted(photos, masks):
    return composite(telea().inpaint(photos * (1 - masks), masks), photos, masks)


@pytest.mark.parametrize(
    "net", ["alex", pytest.param("vgg", marks=pytest.mark.slow)]
)  # vgg: building torchvision's VGG16 twice takes ~10 s of CPU
def test_lpips_matches_the_lpips_package_on_the_same_weights(
    net, with_backbones, photos, inpainted
):
    ours = load_lpips(net)
    assert ours is not None and ours.key == f"lpips_{net}"
    with torch.no_grad():
        expected = _reference(net)(inpainted, photos).flatten()
    got = ours(inpainted, photos)
    assert got.shape == (len(photos),)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.all(got > 0)
    assert torch.allclose(ours(photos, photos), torch.zeros(len(photos)), atol=1e-6)


def test_lpips_follows_the_weights_file_and_converts_unit_range(
    with_backbones, tmp_path, photos, inpainted
):
    ours = load_lpips("alex")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    save_backbone(other_dir / LPIPS_BACKBONE_URLS["alex"].rsplit("/", 1)[1], "alex", seed=99)
    other = load_lpips("alex", weights_dir=other_dir)  # weights_dir is searched first
    assert not torch.allclose(other(inpainted, photos), ours(inpainted, photos), atol=1e-4)
    # [0,1] images are converted when declared, and give the [-1,1] numbers.
    unit = ours((inpainted + 1) / 2, (photos + 1) / 2, value_range=(0, 1))
    assert torch.allclose(unit, ours(inpainted, photos), atol=1e-6)
    with pytest.raises(DataError, match=r"outside \[-1, 1\]"):
        ours((inpainted + 1) * 127.5, photos)  # 0..255 images


def test_a_wrong_checkpoint_is_refused(tmp_path):
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save({"classifier.1.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelLoadError, match="not a torchvision alex checkpoint"):
        LPIPSScorer("alex", path)


def test_missing_weights_leave_lpips_out_with_a_warning(empty_torch_home, photos, inpainted):
    with pytest.warns(MetricUnavailableWarning, match="lpips_alex left out"):
        assert load_lpips("alex") is None  # HF_HUB_OFFLINE=1 (tests): no download either
    with pytest.warns(MetricUnavailableWarning, match="lpips_vgg left out"):
        evaluator = Evaluator(lpips=("alex", "vgg"))
    assert evaluator.names == ["psnr", "ssim", "mae"]
    assert set(evaluator.score(inpainted, photos, torch.zeros_like(photos[:, :1]))) == {
        "psnr",
        "ssim",
        "mae",
    }
    protocol = evaluator.protocol()
    assert "lpips" not in protocol  # no LPIPS protocol line for a metric not reported
    assert "not on disk" in protocol["lpips_alex (left out)"]
    assert "not on disk" in protocol["lpips_vgg (left out)"]
