"""open_clip text tower -> transformers CLIPTextModel: same numbers, SD layout on disk."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextModel

from dcgd.components.text_encoder import TextConditioner
from dcgd.describe.clip_model import load_clip, save_clip, tiny_clip_config
from dcgd.errors import ModelLoadError
from dcgd.training.open_clip_text import text_conditioner_from_open_clip

PROMPTS = [
    "red circle!",
    "brick wall with blue squares",
    "a prompt long enough to be truncated at the sixteen tokens of the tiny context",
]


def _open_clip_hidden(clip, ids: torch.Tensor) -> torch.Tensor:
    """open_clip's per-token text states after the final norm (what SD 2's U-Net reads)."""
    model = clip.model
    x = model.token_embedding(ids) + model.positional_embedding
    return model.ln_final(model.transformer(x, attn_mask=model.attn_mask))


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_converted_tower_computes_what_open_clip_computes(tmp_path, quick_gelu):
    config = dict(tiny_clip_config(), quick_gelu=quick_gelu)
    built = load_clip(model_cfg=config, seed=3)
    save_clip(built.model, config, tmp_path / "clip")
    clip = load_clip(str(tmp_path / "clip"))  # the user's path: a saved directory
    text, projection = text_conditioner_from_open_clip(clip)
    assert text.model.config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")

    ids = clip.tokenize(PROMPTS)
    ours = text.tokenize(PROMPTS)
    # Same ids up to end-of-text; then open_clip pads with 0, ours with end-of-text (SD 1.x).
    valid = torch.arange(ids.shape[1]) <= ids.argmax(dim=1, keepdim=True)
    assert torch.equal(ours[valid], ids[valid]) and (ours[~valid] == 49407).all()
    with torch.no_grad():
        torch.testing.assert_close(text(PROMPTS)[valid], _open_clip_hidden(clip, ids)[valid])
        torch.testing.assert_close(text.pooled(PROMPTS) @ projection, clip.model.encode_text(ids))

    # Saved in the Stable Diffusion layout: loads as a plain CLIPTextModel and as τθ.
    text.save_pretrained(tmp_path / "sd")
    plain = CLIPTextModel.from_pretrained(tmp_path / "sd", subfolder="text_encoder")
    again = TextConditioner.from_pretrained(str(tmp_path / "sd"))
    with torch.no_grad():
        expected = text(PROMPTS)
        torch.testing.assert_close(plain(input_ids=ours).last_hidden_state, expected)
        torch.testing.assert_close(again(PROMPTS), expected)


def test_towers_a_clip_text_model_cannot_reproduce_are_refused():
    config = tiny_clip_config()
    config["text_cfg"]["no_causal_mask"] = True
    config["text_cfg"]["pool_type"] = "last"
    with pytest.raises(ModelLoadError, match="cannot reproduce this tower"):
        text_conditioner_from_open_clip(load_clip(model_cfg=config))
