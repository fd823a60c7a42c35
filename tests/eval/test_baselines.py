"""Baselines through the method interface: OpenCV Telea / Navier-Stokes, the DCGD model under
another prompt mode, and methods added by registration or import path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dcgd.errors import ConfigError
from dcgd.eval.baselines import (
    BASELINES,
    InpaintingMethod,
    ModelMethod,
    build_method,
    register_method,
)
from dcgd.eval.metrics import psnr
from dcgd.method.input import composite


class MeanColour:
    """A method added by import path: fills the hole with the mean colour of the rest."""

    name = "mean_colour"

    def __call__(self, batch):
        source, mask = batch["source"], batch["mask"]
        keep = 1 - mask
        mean = (source * keep).sum(dim=(2, 3), keepdim=True) / keep.sum(dim=(2, 3), keepdim=True)
        return mean.expand_as(source)


class NotAMethod:
    pass


@pytest.mark.parametrize(("spec", "flag"), [("opencv_telea", 1), ("opencv_ns", 0)])
def test_opencv_methods_are_cv2_inpaint_on_8_bit_images(spec, flag, photos, masks):
    method = build_method(spec)
    assert method.name == spec and isinstance(method, InpaintingMethod)
    holed = photos * (1 - masks)
    pred = method({"source": holed, "mask": masks})
    assert pred.shape == photos.shape and pred.dtype == photos.dtype
    assert cv2.INPAINT_TELEA == 1 and cv2.INPAINT_NS == 0
    for i in range(len(photos)):
        image = ((holed[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        m = (masks[i, 0].numpy() > 0.5).astype(np.uint8) * 255
        expected = cv2.inpaint(image, m, 3, flag).astype(np.float32) / 127.5 - 1
        assert np.allclose(pred[i].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    # It fills from the context: much closer to the photo than a grey hole.
    assert torch.all(psnr(composite(pred, holed, masks), photos) > psnr(holed, photos) + 3)


def test_methods_are_added_by_import_path_or_registration(photos, masks):
    method = build_method("tests.eval.test_baselines.MeanColour")
    assert method.name == "mean_colour"
    assert method({"source": photos, "mask": masks}).shape == photos.shape
    register_method("mean_colour", MeanColour)
    try:
        assert isinstance(build_method("mean_colour"), MeanColour)
    finally:
        del BASELINES["mean_colour"]
    with pytest.raises(ConfigError, match="not an inpainting method"):
        build_method("tests.eval.test_baselines.NotAMethod")
    with pytest.raises(ConfigError, match="cannot import"):
        build_method("tests.eval.nowhere.Method")
    with pytest.raises(ConfigError, match="unknown method 'lama'"):
        build_method("lama")
    with pytest.raises(ConfigError, match="radius"):
        build_method("opencv_telea").__class__("telea", radius=0)


@pytest.mark.slow  # ~15 s of CPU: diffusers' import and the first sampling call
def test_dcgd_prompt_modes_sample_the_model_under_test(photos, masks):
    from dcgd.training.module import DCGDModule

    torch.manual_seed(0)
    model = DCGDModule(
        latent_space="pixel",
        unet_config={"block_out_channels": [16, 32]},
        text_encoder="tiny",
        val_steps=2,
        ema_decay=None,
    ).eval()
    batch = {
        "source": photos[:2, :, :32, :32] * (1 - masks[:2, :, :32, :32]),
        "mask": masks[:2, :, :32, :32],
        "t_info": ["a cat on a sofa", "a rocket"],
        "t_mask": ["a cup", "a tower"],
        "id": ["a", "b"],
    }
    none = build_method("dcgd_none", model.pipeline())
    assert isinstance(none, ModelMethod) and none.name == "dcgd_none"
    expected = model.sample(batch, prompt_mode="none")
    assert torch.equal(none(batch), expected)
    dual = build_method("dcgd_dual", model.pipeline())(batch)
    assert not torch.allclose(dual, expected)  # the prompts reach the model
    with pytest.raises(ConfigError, match="unknown prompt mode"):
        build_method("dcgd_both", model.pipeline())
    with pytest.raises(ConfigError, match="needs the DCGD pipeline"):
        build_method("dcgd_none", None)
