"""The repeated-object cases and their colour judge (``dcgd.eval.repeated_objects``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcgd.data.procedural import OBJECT_CLASSES, PLURALS, render_object
from dcgd.eval import repeated_objects as ro


@pytest.fixture(scope="module")
def cases() -> list[ro.Case]:
    return ro.build_cases(24, seed=0, size=64)


def _bytes(cases: list[ro.Case]) -> bytes:
    return b"".join(
        c.source.tobytes() + c.target.tobytes() + c.mask.tobytes() + c.footprint.tobytes()
        for c in cases
    )


def test_the_case_set_is_fixed_by_its_seed(cases):
    again = ro.build_cases(24, seed=0, size=64)
    assert _bytes(again) == _bytes(cases)
    assert [(c.id, c.t_info, c.t_mask) for c in again] == [
        (c.id, c.t_info, c.t_mask) for c in cases
    ]
    assert _bytes(ro.build_cases(24, seed=1, size=64)) != _bytes(cases)
    # A case depends on (seed, index) only, not on how many cases are built.
    assert _bytes(ro.build_cases(5, seed=0, size=64)) == _bytes(cases[:5])


def test_cases_are_removal_requests_the_judge_can_decide(cases):
    assert [c.size_name for c in cases[:6]] == ["small", "medium", "large"] * 2
    apart = 0
    for case in cases:
        outside = case.mask == 0
        np.testing.assert_array_equal(case.source[outside], case.target[outside])
        assert case.footprint.any() and not (case.footprint & outside).any()
        assert case.p_src - case.p_clean >= ro.MIN_CONTRAST
        assert case.t_mask == case.label and case.t_info.startswith(case.scene)
        # The look-alikes stay mostly visible, so the scene label names them.
        assert PLURALS[case.label] in case.t_info
        apart += not (case.lookalikes & (case.mask > 0)).any()
    assert apart >= 0.9 * len(cases)  # pasted away from the look-alikes when there is room


def test_the_source_reappears_the_clean_target_and_a_mean_fill_do_not(cases):
    batch = ro.case_batch(cases)
    source = ro.score(cases, batch, batch["source"])
    assert all(row["reappeared"] == 1.0 for row in source)
    clean = ro.score(cases, batch, batch["target"])
    assert all(row["reappeared"] == 0.0 for row in clean)
    assert all(row["hole_mae"] == 0 and row["hole_psnr"] == ro.PSNR_CAP for row in clean)
    assert all(row["ssim"] == pytest.approx(1.0, abs=1e-3) for row in clean)  # float32 maps
    filled = ro.score(cases, batch, ro.mean_fill(batch["source"], batch["mask"]))
    assert all(row["reappeared"] == 0.0 for row in filled)
    assert all(0 < row["hole_mae"] < 0.5 for row in filled)


def test_a_fill_in_the_class_colour_reappears_a_fill_in_another_does_not(cases):
    for case in cases[:8]:
        colour = np.asarray(OBJECT_CLASSES[case.label][0], np.float32)
        same = case.target.astype(np.float32).copy()
        same[case.mask > 0] = 0.9 * colour
        assert case.judge(same)[1]
        other = next(k for k in OBJECT_CLASSES if k != case.label)
        different = case.target.astype(np.float32).copy()
        different[case.mask > 0] = OBJECT_CLASSES[other][0]
        assert not case.judge(different)[1]


@pytest.mark.parametrize("label", list(OBJECT_CLASSES))
def test_each_class_is_told_from_every_other_by_colour(label):
    rgba = render_object(label, 40, np.random.default_rng(3))
    opaque = rgba[..., 3] > 127
    for other in OBJECT_CLASSES:
        share = ro.looks_like(rgba[..., :3], other)[opaque].mean()
        assert share > 0.95 if other == label else share < 0.05, (label, other, share)


def test_bootstrap_intervals_are_seeded_and_contain_the_mean():
    values = np.random.default_rng(0).random(50)
    indices = ro.resample_indices(50, 500, seed=7)
    stat = ro.bootstrap(values, indices)
    assert stat["lo"] < stat["mean"] < stat["hi"]
    assert ro.bootstrap(values, ro.resample_indices(50, 500, seed=7)) == stat
    assert ro.bootstrap(np.ones(50), indices) == {"mean": 1.0, "lo": 1.0, "hi": 1.0}


def test_mean_fill_uses_only_the_known_pixels():
    source = torch.full((1, 3, 8, 8), -1.0)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 2:5] = 1
    source[..., 2:5, 2:5] = 1.0  # the object: must not leak into the fill
    out = ro.mean_fill(source, mask)
    assert torch.all(out == -1.0)
