"""Removal metrics on the built-in procedural scenes.

The ranking test uses ``ObjectResidue`` (weight-free). CLIP@N's logic is tested separately
with a real tiny open_clip (random weights: a CLIP that knows the procedural classes would
need minutes of CPU training): the top-N rule against an independent computation, the crop
(only the masked region counts, look-alikes beside it do not), and that it sees the source
region exactly as the describer does.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from dcgd.data.buckets import PAPER_BUCKETS
from dcgd.data.images import mask_to_tensor, to_tensor
from dcgd.data.pairs import hole_pair, paste_object, paste_pair
from dcgd.data.procedural import OBJECT_NAMES, SCENE_NAMES, render_object, render_scene
from dcgd.errors import ConfigError
from dcgd.eval.baselines import telea
from dcgd.eval.evaluator import Evaluator
from dcgd.eval.removal import ClipAtN, ObjectResidue, frechet_distance
from dcgd.method.input import composite


def _paste_cases(count: int = 12, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Paste pairs where the pasted object looks like the scene's own objects (the paper's
    hard case), and an output where the object came back: the same cut-out drawn again at
    the same place on the clean background."""
    rng = np.random.default_rng(seed)
    sources, masks, targets, back = [], [], [], []
    while len(sources) < count:
        scene = render_scene(rng, size)
        label = scene.objects[0].label
        cutout = render_object(label, 96, rng)
        bucket = PAPER_BUCKETS[len(sources) % 3]
        pair = paste_pair(scene.image, cutout, rng, label, dilation=3, bucket=bucket)
        if pair is None:
            continue
        x, y, w, h = pair.meta["box"]
        scaled = cv2.resize(cutout, (w, h), interpolation=cv2.INTER_AREA)
        shown, _ = paste_object(pair.target, scaled, x, y, dilation=0)
        sources.append(to_tensor(pair.source))
        masks.append(mask_to_tensor(pair.mask))
        targets.append(to_tensor(pair.target))
        back.append(to_tensor(shown))
    source, mask = torch.stack(sources), torch.stack(masks)
    return {
        "source": source,
        "mask": mask,
        "target": torch.stack(targets),
        "object_back": torch.stack(back),
        "telea": telea().inpaint(source, mask),
    }


@pytest.fixture(scope="module")
def cases():
    return _paste_cases()


def test_residue_ranks_an_output_showing_the_object_below_one_without(cases):
    source, mask, target = cases["source"], cases["mask"], cases["target"]
    scorer = ObjectResidue()
    residue = {
        name: scorer(source, composite(cases[name], source, mask), mask)["residue"]
        for name in ("object_back", "telea", "target")
    }
    assert not any(torch.isnan(v).any() for v in residue.values())
    # Per image: the object drawn back scores worse than OpenCV's fill.
    assert torch.all(residue["object_back"] > residue["telea"]), residue
    # And in the bucketed means the evaluation reports (lower is better).
    means = {}
    for name in ("object_back", "telea", "target"):
        evaluator = Evaluator(lpips=(), removal=[scorer])
        evaluator.update(cases[name], target, mask, source=source, kinds=["paste"] * len(mask))
        means[name] = evaluator.compute()["residue"]["all"]
    assert means["object_back"] > 0.5 > means["telea"]
    assert means["object_back"] > means["target"]
    # Returning the source unchanged is the worst case: exactly 1.
    assert scorer(source, source, mask)["residue"].tolist() == [1.0] * len(mask)


def test_residue_is_undefined_without_an_object_or_a_mask():
    scene = render_scene(np.random.default_rng(1), 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 1
    hole = hole_pair(scene.image, mask)
    source, target = to_tensor(hole.source)[None], to_tensor(hole.target)[None]
    m = mask_to_tensor(hole.mask)[None]
    scorer = ObjectResidue()
    assert math.isnan(scorer(source, target, m)["residue"].item())  # nothing under the mask
    assert math.isnan(scorer(target, target, torch.zeros_like(m))["residue"].item())
    # The evaluator leaves removal scores out of hole pairs even when the source has content.
    scores = Evaluator(lpips=(), removal=[scorer]).score(target, target, m, target, ["hole"])
    assert math.isnan(scores["residue"].item())


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal([0, 1], [1, 2], size=(20000, 2))
    b = rng.normal([3, 1], [2, 1], size=(20000, 2))
    # (mu_a - mu_b)^2 + sum (sigma_a - sigma_b)^2 for diagonal covariances
    assert frechet_distance(a, b) == pytest.approx(9 + 1 + 1, rel=0.03)
    flat = np.zeros((50, 4))  # singular covariances: finite, no warnings
    assert frechet_distance(flat, flat + 1) == pytest.approx(4.0, abs=1e-4)


# ------------------------------------------------------------------------------- CLIP@N


@pytest.fixture(scope="module")
def describer():
    from dcgd.describe.clip_describer import ClipRegionDescriber
    from dcgd.describe.clip_model import tiny_clip_config

    return ClipRegionDescriber(
        clip_model_cfg=tiny_clip_config(),
        object_vocabulary="procedural_objects.txt",
        scene_vocabulary="procedural_scenes.txt",
        templates="procedural_templates.txt",
    )


@pytest.fixture(scope="module")
def clip_at_n(describer):
    return ClipAtN.from_describer(describer, top_n=(1, 3, 5))


def test_clip_at_n_uses_the_describers_clip_vocabulary_and_crop(describer, clip_at_n, cases):
    assert clip_at_n.clip is describer.clip
    assert clip_at_n.vocabulary == [*OBJECT_NAMES, *SCENE_NAMES]
    assert (clip_at_n.margin, clip_at_n.fill) == (describer.margin, describer.fill)
    # Its top-1 for the source region is the object the describer names as T_mask.
    objects_only = ClipAtN.from_describer(describer, top_n=(1,), include_scenes=False)
    batch = {"source": cases["source"], "mask": cases["mask"]}
    named = [d.t_mask for d in describer.describe(batch)]
    sims = objects_only.similarities(cases["source"], cases["mask"])
    assert [OBJECT_NAMES[i] for i in sims.argmax(dim=1).tolist()] == named


def test_clip_at_n_follows_the_top_n_rule(clip_at_n, cases):
    source, mask = cases["source"], cases["mask"]
    for name in ("object_back", "telea", "target"):
        result = composite(cases[name], source, mask)
        scores = clip_at_n(source, result, mask)
        src = clip_at_n.similarities(source, mask).numpy()
        res = clip_at_n.similarities(result, mask).numpy()
        for n in (1, 3, 5):
            top_n = np.argsort(-res, axis=1)[:, :n]
            expected = [float(s.argmax() not in t) for s, t in zip(src, top_n, strict=True)]
            assert scores[f"clip@{n}"].tolist() == expected
        assert torch.all(scores["clip@1"] >= scores["clip@3"])
        assert torch.all(scores["clip@3"] >= scores["clip@5"])
    unchanged = clip_at_n(source, source, mask)  # the object is still there
    assert all(v.tolist() == [0.0] * len(mask) for v in unchanged.values())


def test_clip_at_n_sees_only_the_masked_region(clip_at_n, cases):
    source, mask = cases["source"], cases["mask"]
    sims = clip_at_n.similarities(source, mask)
    outside = source * mask + torch.rand_like(source) * (1 - mask)  # look-alikes, noise...
    assert torch.allclose(clip_at_n.similarities(outside, mask), sims, atol=1e-5)
    inside = torch.rand_like(source) * mask + source * (1 - mask)
    assert not torch.allclose(clip_at_n.similarities(inside, mask), sims, atol=1e-3)


def test_clip_at_n_is_undefined_on_holes_and_refuses_bad_settings(clip_at_n, describer):
    image = to_tensor(render_scene(np.random.default_rng(2), 64).image)[None]
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 10:30, 10:30] = 1
    holed = image * (1 - mask)
    assert math.isnan(clip_at_n(holed, image, mask)["clip@1"].item())
    with pytest.raises(ConfigError, match="top_n"):
        ClipAtN(describer.clip, ["a", "b"], top_n=(3,))
    with pytest.raises(ConfigError, match="at least two"):
        ClipAtN(describer.clip, ["a", "a"])
