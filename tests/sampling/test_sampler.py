"""The eq. 6 sampler: deterministic per seed and sample, known region pasted back exactly."""

from __future__ import annotations

import pytest
import torch

from dcgd.components.schedulers import SAMPLERS
from tests.numerics import SAMPLED_ATOL
from tests.training.tiny import make_batch, tiny_module


@pytest.fixture(scope="module")
def module():
    return tiny_module().eval()


def _run(module, batch, **kw):
    kw = {"steps": 3, **kw}
    return module.sample(batch, **kw)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_same_seed_same_result_other_seed_other_result(module, sampler):
    batch = make_batch()
    first = _run(module, batch, seed=7, sampler=sampler)
    again = _run(module, batch, seed=7, sampler=sampler)
    other = _run(module, batch, seed=8, sampler=sampler)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])  # ddpm draws noise at every step too
def test_a_result_does_not_depend_on_its_batch(module, sampler):
    batch = make_batch()
    together = _run(module, batch, sampler=sampler)
    alone = {k: v[1:] for k, v in batch.items()}
    # Batches of 1 and 2 go through other kernel shapes: equal to rounding (SAMPLED_ATOL).
    alone = _run(module, alone, sampler=sampler)
    torch.testing.assert_close(alone, together[1:], rtol=0, atol=SAMPLED_ATOL)


def test_outside_the_mask_the_result_is_the_source_exactly(module):
    batch = make_batch()
    outside = (batch["mask"] == 0).expand_as(batch["source"])
    result = _run(module, batch)
    assert torch.equal(result[outside], batch["source"][outside])
    assert not torch.allclose(result[~outside], batch["source"][~outside])
    raw = _run(module, batch, paste_back=False)
    assert not torch.allclose(raw[outside], batch["source"][outside])
    assert torch.equal(raw[~outside], result[~outside])


def test_each_step_is_one_batched_forward_of_both_branches(module):
    batch = make_batch()
    sizes = []
    unet = module.pipeline().unet
    handle = unet.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        _run(module, batch, steps=4)
    finally:
        handle.remove()
    assert sizes == [4, 4, 4, 4]


def test_the_prompt_mode_changes_the_result(module):
    batch = make_batch()
    results = {m: _run(module, batch, prompt_mode=m) for m in ("none", "dual")}
    assert not torch.allclose(results["none"], results["dual"])
    # With w = 1 only the positive branch counts: "positive" == "dual" (same T_pos), to
    # rounding: one branch or both go through the U-Net, batches of other shapes.
    torch.testing.assert_close(
        _run(module, batch, prompt_mode="positive", w=1.0),
        _run(module, batch, prompt_mode="dual", w=1.0),
        rtol=0,
        atol=SAMPLED_ATOL,
    )


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_known_region_is_the_source_noised_to_each_step(module, sampler):
    # "replace": before every step the latent outside the mask is the source forward-noised
    # to that step's level (with the sample's starting noise), so the U-Net sees there what
    # training showed it; inside the mask it is the sampler's own latent.
    from dcgd.components.schedulers import sampling_scheduler
    from dcgd.method.randomness import initial_noise

    batch = make_batch()
    seen = []
    unet = module.pipeline().unet
    handle = unet.register_forward_pre_hook(lambda m, args: seen.append((args[0][:2], args[1])))
    try:
        _run(module, batch, steps=3, sampler=sampler)
        replaced = len(seen)
        _run(module, batch, steps=3, sampler=sampler, known_region="free")
    finally:
        handle.remove()
    noise = initial_noise((3, 16, 16), batch["id"], 0, torch.device("cpu"), torch.float32)
    outside = (batch["mask"] == 0).expand_as(batch["source"])
    for unet_in, t in seen[:replaced]:
        t = t[:1]
        # A fresh scheduler per step: sigma-based ones keep a step index inside.
        scheduler = sampling_scheduler(sampler, module.noise_scheduler)
        scheduler.set_timesteps(3)
        noised = scheduler.add_noise(batch["source"], noise, t)
        expected = scheduler.scale_model_input(noised, t[0])
        torch.testing.assert_close(unet_in[:, :3][outside], expected[outside])
    # Left free, the known region of the latent is the sampler's own after the first step.
    free_in = seen[replaced + 1][0]
    assert not torch.allclose(free_in[:, :3][outside], seen[1][0][:, :3][outside])
