"""The CLIP region describer on a tiny CLIP trained on the procedural scenes (labels known)."""

from __future__ import annotations

import pytest
import torch

from dcgd.data.procedural import OBJECT_NAMES, SCENE_NAMES
from dcgd.describe.clip_describer import ClipRegionDescriber
from dcgd.errors import ConfigError, ModelLoadError
from tests.clip import PROCEDURAL_VOCABULARY, eval_batch, procedural_data

pytestmark = pytest.mark.slow  # trains the session's tiny CLIP (~30 s) on first use


@pytest.fixture(scope="module")
def describer(trained_clip):
    return ClipRegionDescriber(clip_model=str(trained_clip), **PROCEDURAL_VOCABULARY)


@pytest.fixture(scope="module")
def held_out():
    """Evaluation scenes: drawn from another seed stream than any training scene."""
    return eval_batch(procedural_data())


def test_top1_mask_names_the_pasted_object_well_above_chance(describer, held_out):
    pasted = [i for i, kind in enumerate(held_out["kind"]) if kind == "paste"]
    assert len(pasted) >= 50
    descriptions = describer.describe(held_out)
    right = sum(descriptions[i].t_mask == held_out["object_label"][i] for i in pasted)
    accuracy = right / len(pasted)
    chance = 1 / len(OBJECT_NAMES)
    print(f"T_mask top-1 accuracy {accuracy:.3f} on {len(pasted)} pastes (chance {chance:.3f})")
    assert accuracy >= 0.5  # 4x chance; measured ~0.95 after 150 steps
    # The scene of T_info: 6 classes.
    scene_right = sum(
        descriptions[i].t_info.split(" with ")[0] == held_out["scene_label"][i].split(" with ")[0]
        for i in pasted
    )
    assert scene_right / len(pasted) >= 0.5 > 1 / len(SCENE_NAMES)


def test_descriptions_are_identical_across_fresh_loads(trained_clip, held_out):
    first = ClipRegionDescriber(clip_model=str(trained_clip), **PROCEDURAL_VOCABULARY)
    second = ClipRegionDescriber(clip_model=str(trained_clip), **PROCEDURAL_VOCABULARY)
    assert first.settings() == second.settings()
    assert first.describe(held_out) == second.describe(held_out)  # texts and scores


def test_ground_truth_under_the_mask_never_reaches_a_description(describer, held_out):
    changed = dict(held_out)
    changed["target"] = torch.rand_like(held_out["target"]) * 2 - 1
    assert describer.describe(changed) == describer.describe(held_out)


def test_hole_pairs_have_no_object_to_name(describer):
    holes = eval_batch(procedural_data(paste_probability=0.0), count=16)
    assert set(holes["kind"]) == {"hole"}
    for description in describer.describe(holes):
        assert description.t_mask == ""
        assert description.scores["mask"] == []
        assert description.t_info  # the context is still described


def test_scores_are_returned_ranked_with_the_text(describer, held_out):
    description = describer.describe(eval_batch(procedural_data(), count=4))[0]
    ranked = description.scores["mask"]
    names = [name for name, _ in ranked]
    probabilities = [p for _, p in ranked]
    assert description.t_mask == names[0]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-5
    assert set(description.scores) == {"mask", "scene", "context"}


def test_top_k_threshold_and_phrasing_are_configurable(trained_clip):
    batch = eval_batch(procedural_data(), count=8)
    two = ClipRegionDescriber(
        clip_model=str(trained_clip),
        mask_top_k=2,
        mask_template="a photo without {objects}",
        joiner=" or ",
        exclude_mask_objects=True,
        **PROCEDURAL_VOCABULARY,
    ).describe(batch)
    for d, kind in zip(two, batch["kind"], strict=True):
        if kind == "paste":
            first, second = (name for name, _ in d.scores["mask"][:2])
            assert d.t_mask == f"a photo without {first} or {second}"
            context = d.t_info.partition(" with ")[2].split(" or ")
            assert first not in context and second not in context  # kept out of T_info
    strict = ClipRegionDescriber(
        clip_model=str(trained_clip), min_score=0.999999, **PROCEDURAL_VOCABULARY
    ).describe(batch)
    for d in strict:
        kept = [name for name, p in d.scores["mask"] if p >= 0.999999]
        assert d.t_mask == (kept[0] if kept else "")


def test_bad_settings_fail_at_construction(trained_clip):
    with pytest.raises(ConfigError, match="object vocabulary file 'nope.txt' not found"):
        ClipRegionDescriber(clip_model=str(trained_clip), object_vocabulary="nope.txt")
    with pytest.raises(ConfigError, match=r"must contain \{scene\}"):
        ClipRegionDescriber(clip_model=str(trained_clip), info_template="{objects}")
    with pytest.raises(ModelLoadError, match="neither an open_clip model name"):
        ClipRegionDescriber(clip_model="ViT-Nope-32", clip_pretrained="x")
    with pytest.raises(ConfigError, match="exactly one"):
        ClipRegionDescriber()
