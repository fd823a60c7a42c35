"""Loading CLIPs, tokenizers and vocabularies: the real thing, or a clear error."""

from __future__ import annotations

import open_clip
import pytest
import torch
from transformers import CLIPTokenizer

from dcgd.components.text_encoder import TextConditioner
from dcgd.components.tokenizer import clip_tokenizer_from_open_clip, load_tokenizer
from dcgd.data.procedural import OBJECT_NAMES, SCENE_NAMES
from dcgd.describe.clip_model import load_clip, save_clip, tiny_clip_config
from dcgd.describe.vocabulary import read_templates, read_vocabulary
from dcgd.errors import ConfigError, ModelLoadError

PROMPTS = ["a photo of a cat", "brick wall with blue squares", "Red  Circle!"]


# ----------------------------------------------------------------------- tokenizers
def _empty_tokenizer(directory):
    """What CLIPTokenizer.from_pretrained(<hub id>) gives offline: only special tokens."""
    tokenizer = CLIPTokenizer(vocab={"<|startoftext|>": 0, "<|endoftext|>": 1}, merges=[])
    tokenizer.save_pretrained(directory)
    assert len(CLIPTokenizer.from_pretrained(directory)) == 2  # loads without complaint
    return directory


def test_an_empty_tokenizer_fails_loudly(tmp_path):
    _empty_tokenizer(tmp_path / "tok")
    with pytest.raises(ModelLoadError, match=r"empty or broken \(vocabulary size 2\)"):
        load_tokenizer(str(tmp_path / "tok"))


def test_a_text_encoder_directory_with_an_empty_tokenizer_fails_loudly(tmp_path):
    TextConditioner.tiny().model.save_pretrained(tmp_path / "text_encoder")
    _empty_tokenizer(tmp_path / "tokenizer")
    with pytest.raises(ModelLoadError, match="empty or broken"):
        TextConditioner.from_pretrained(str(tmp_path))


def test_bundled_bpe_tokenizes_like_open_clip():
    ours = clip_tokenizer_from_open_clip(model_max_length=16)
    ids = ours(PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert len(ours) == 49408
    expected = open_clip.SimpleTokenizer(context_length=16)(PROMPTS)
    padded = expected == 0  # open_clip pads with 0, Stable Diffusion 1.x with end-of-text
    assert torch.equal(ids.input_ids[~padded], expected[~padded])
    assert (ids.input_ids[padded] == 49407).all()


def test_a_missing_tokenizer_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="could not load a CLIP tokenizer"):
        load_tokenizer(str(tmp_path / "nothing-here"))


# ----------------------------------------------------------------------- open_clip models
def test_saved_clip_loads_through_dcgd_and_open_clip(tmp_path):
    config = tiny_clip_config()
    built = load_clip(model_cfg=config, seed=5)
    save_clip(built.model, config, tmp_path)
    ours = load_clip(str(tmp_path))
    theirs = open_clip.create_model(f"local-dir:{tmp_path}")
    assert ours.identity == built.identity  # same weights fingerprint: same cache key
    images = torch.rand(2, 3, 32, 32)
    ids = ours.tokenize(PROMPTS[:2])
    with torch.no_grad():
        for model in (ours.model, theirs.eval()):
            torch.testing.assert_close(model.encode_image(images), built.model.encode_image(images))
            torch.testing.assert_close(model.encode_text(ids), built.model.encode_text(ids))


def test_other_weights_change_the_identity():
    first = load_clip(model_cfg=tiny_clip_config(), seed=0)
    second = load_clip(model_cfg=tiny_clip_config(), seed=1)
    assert first.identity["weights"] != second.identity["weights"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "ViT-Q-99"}, "neither an open_clip model name nor an existing directory"),
        ({"model": "runs/clip_procedural/clip"}, "directory .* does not exist. Train"),
        ({"model": "ViT-B-32"}, "needs pretrained weights"),
        ({"model": "ViT-B-32", "pretrained": "no_such_tag"}, "neither a pretrained tag"),
        ({"model_cfg": {"embed_dim": 8}}, "lacks"),
        ({}, "exactly one"),
    ],
)
def test_bad_clip_sources_are_clear_errors(kwargs, message):
    with pytest.raises(ModelLoadError, match=message):
        load_clip(**kwargs)


def test_a_directory_without_a_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not an open_clip model directory"):
        load_clip(str(tmp_path))


# ----------------------------------------------------------------------- vocabularies
def test_procedural_vocabularies_match_the_procedural_labels():
    assert read_vocabulary("procedural_objects.txt") == list(OBJECT_NAMES)
    assert read_vocabulary("procedural_scenes.txt") == list(SCENE_NAMES)
    assert read_templates("procedural_templates.txt") == ["{}"]


def test_places365_and_imagenet_vocabularies():
    scenes = read_vocabulary("categories_places365.txt")
    assert len(scenes) == 365 and "arena hockey" in scenes and "balcony interior" in scenes
    assert len(read_vocabulary("imagenet_classes.txt")) >= 990  # a few names repeat
    assert all("{}" in t for t in read_templates("templates.txt"))


def test_a_missing_or_bad_vocabulary_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"file 'nope.txt' not found.*procedural_objects.txt"):
        read_vocabulary("nope.txt", "object vocabulary")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="holds no names"):
        read_vocabulary(empty)
    bad = tmp_path / "templates.txt"
    bad.write_text("a photo of a thing\n")
    with pytest.raises(ConfigError, match="exactly one"):
        read_templates(bad)
