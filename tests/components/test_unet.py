"""``conv_in`` widening of a pretrained (tiny, saved and reloaded) Stable Diffusion U-Net."""

from __future__ import annotations

import pytest
import torch

from dcgd.components.unet import adapt_conv_in, load_unet
from dcgd.errors import ModelLoadError
from dcgd.method.input import LAYOUTS, layout_channels
from tests.factories import LATENT_CHANNELS, TEXT_WIDTH

C = LATENT_CHANNELS


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    groups = {
        "latent": torch.randn(2, C, 16, 16, generator=gen),
        "mask": (torch.rand(2, 1, 16, 16, generator=gen) > 0.5).float(),
        "object": torch.randn(2, C, 16, 16, generator=gen),
        "context": torch.randn(2, C, 16, 16, generator=gen),
    }
    t = torch.tensor([3, 700])
    states = torch.randn(2, 7, TEXT_WIDTH, generator=gen)
    return groups, t, states


def _cat(groups, names):
    return torch.cat([groups[n] for n in names], dim=1)


@torch.no_grad()
@pytest.mark.parametrize("layout", ["paper_mask", "paper", "inpaint"])
def test_widening_sd_inpainting_keeps_its_output(tiny_sd_inpaint, layout):
    """SD-inpainting sees [latent, mask, context]; the widened net on the same groups, with
    anything at all in the new object channels, computes exactly the same."""
    pretrained = load_unet(str(tiny_sd_inpaint)).eval()
    groups, t, states = _inputs()
    before = pretrained(_cat(groups, LAYOUTS["inpaint"]), t, encoder_hidden_states=states).sample

    unet = adapt_conv_in(load_unet(str(tiny_sd_inpaint)), layout, C).eval()
    assert unet.conv_in.in_channels == layout_channels(layout, C)
    after = unet(_cat(groups, LAYOUTS[layout]), t, encoder_hidden_states=states).sample
    if layout == "paper":  # the paper's eq. 5 has no mask channel: its weights are dropped
        assert not torch.allclose(before, after)
        masked = dict(groups, mask=torch.zeros_like(groups["mask"]))
        before = pretrained(_cat(masked, LAYOUTS["inpaint"]), t, encoder_hidden_states=states)
        before = before.sample
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("layout", ["paper_mask", "paper", "inpaint"])
def test_widening_text_to_image_sd_keeps_its_output(tiny_sd, layout):
    pretrained = load_unet(str(tiny_sd)).eval()
    groups, t, states = _inputs(1)
    before = pretrained(groups["latent"], t, encoder_hidden_states=states).sample
    unet = adapt_conv_in(load_unet(str(tiny_sd)), layout, C).eval()
    after = unet(_cat(groups, LAYOUTS[layout]), t, encoder_hidden_states=states).sample
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_new_channels_start_at_zero_and_old_ones_are_copied(tiny_sd_inpaint):
    old = load_unet(str(tiny_sd_inpaint)).conv_in
    new = adapt_conv_in(load_unet(str(tiny_sd_inpaint)), "paper_mask", C).conv_in
    # paper_mask = [latent 0:4, mask 4, object 5:9, context 9:13]; inpaint = [0:4, 4, 5:9].
    torch.testing.assert_close(new.weight[:, 0:5], old.weight[:, 0:5], rtol=0, atol=0)
    assert torch.count_nonzero(new.weight[:, 5:9]) == 0
    torch.testing.assert_close(new.weight[:, 9:13], old.weight[:, 5:9], rtol=0, atol=0)
    torch.testing.assert_close(new.bias, old.bias, rtol=0, atol=0)


@torch.no_grad()
def test_widened_unet_round_trips_through_save_pretrained(tiny_sd_inpaint, tmp_path):
    unet = adapt_conv_in(load_unet(str(tiny_sd_inpaint)), "paper_mask", C).eval()
    with torch.no_grad():  # make the new channels matter, so a re-initialised conv_in shows
        unet.conv_in.weight[:, 5:9].normal_(generator=torch.Generator().manual_seed(0))
    unet.save_pretrained(tmp_path / "unet")
    loaded = load_unet(str(tmp_path)).eval()
    assert loaded.config.in_channels == 13
    groups, t, states = _inputs(2)
    x = _cat(groups, LAYOUTS["paper_mask"])
    torch.testing.assert_close(
        loaded(x, t, encoder_hidden_states=states).sample,
        unet(x, t, encoder_hidden_states=states).sample,
        rtol=0,
        atol=0,
    )
    # Loading again needs no adapting: the width is recognised as the paper_mask layout.
    assert adapt_conv_in(loaded, "paper_mask", C) is loaded


def test_a_unet_of_unknown_width_is_refused(tiny_sd):
    unet = adapt_conv_in(load_unet(str(tiny_sd)), "paper", C)
    unet.conv_in = torch.nn.Conv2d(7, unet.conv_in.out_channels, 3, padding=1)
    with pytest.raises(ModelLoadError, match="7 input channels"):
        adapt_conv_in(unet, "paper_mask", C)


def test_a_missing_unet_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="could not load a U-Net"):
        load_unet(str(tmp_path / "nowhere"))
