"""Eq. 6: the prompt table of DESIGN.md §1, the CFG form, and one batched 2B forward."""

from __future__ import annotations

import pytest
import torch

from dcgd.errors import ConfigError
from dcgd.method.guidance import PROMPT_MODES, combine, dual_forward, guided_noise, select_prompts
from tests.factories import tiny_text, tiny_unet
from tests.numerics import assert_close_to_scale

T_INFO = ["a kitchen with a table", "a street"]
T_MASK = ["a cat", "a red car"]
EMPTY = ["", ""]

# DESIGN.md §1, written out: mode -> (T_pos, T_neg).
TABLE = {
    "none": (EMPTY, EMPTY),
    "positive": (T_INFO, EMPTY),
    "negative": (EMPTY, T_MASK),
    "dual": (T_INFO, T_MASK),
}


@pytest.mark.parametrize("mode", PROMPT_MODES)
def test_prompt_selection_follows_the_table(mode):
    assert select_prompts(mode, T_INFO, T_MASK) == TABLE[mode]


def test_unknown_prompt_mode_is_refused():
    with pytest.raises(ConfigError, match="prompt_mode"):
        select_prompts("both", T_INFO, T_MASK)


@pytest.mark.parametrize("w", [0.0, 1.0, 1.5, 7.5])
def test_combine_is_the_papers_weighted_sum(w):
    gen = torch.Generator().manual_seed(0)
    eps_pos, eps_neg = torch.randn(2, 2, 4, 8, 8, generator=gen)
    paper = w * eps_pos + (1 - w) * eps_neg  # eq. 6 as printed
    # Another form of the same sum: a few ulps of its largest term apart, ~1e-7 of the
    # result's scale.
    assert_close_to_scale(combine(eps_pos, eps_neg, w), paper, rel=1e-5)


@pytest.fixture(scope="module")
def parts():
    unet = tiny_unet(in_channels=13).eval()
    text = tiny_text().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 13, 16, 16, generator=gen)
    t = torch.tensor([10, 900])
    return unet, text, x, t


@torch.no_grad()
def test_batched_forward_equals_two_separate_forwards(parts):
    unet, text, x, t = parts
    states_pos, states_neg = text(T_INFO), text(T_MASK)
    calls = []
    handle = unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        eps_pos, eps_neg = dual_forward(unet, x, t, states_pos, states_neg)
    finally:
        handle.remove()
    assert calls == [4], "both branches must run as ONE U-Net call of size 2B"
    separate_pos = unet(x, t, encoder_hidden_states=states_pos).sample
    separate_neg = unet(x, t, encoder_hidden_states=states_neg).sample
    # Batches of 4 and 2 take other kernel shapes: the same to rounding, ~1e-6 of the
    # prediction's scale; 1e-4 of it leaves 100x (other prompts move it by ~1e-1).
    assert_close_to_scale(eps_pos, separate_pos, rel=1e-4)
    assert_close_to_scale(eps_neg, separate_neg, rel=1e-4)
    assert not torch.allclose(eps_pos, eps_neg), "different prompts must change the prediction"


@torch.no_grad()
@pytest.mark.parametrize("mode", PROMPT_MODES)
def test_guided_noise_is_eq6_for_each_prompt_mode(parts, mode):
    unet, text, x, t = parts
    w = 2.5
    t_pos, t_neg = select_prompts(mode, T_INFO, T_MASK)
    guided = guided_noise(unet, x, t, text(t_pos), text(t_neg), w)
    # Reference: separate forwards with the prompts of the table, eq. 6 as printed.
    want_pos, want_neg = TABLE[mode]
    eps_pos = unet(x, t, encoder_hidden_states=text(want_pos)).sample
    eps_neg = unet(x, t, encoder_hidden_states=text(want_neg)).sample
    assert_close_to_scale(guided, w * eps_pos + (1 - w) * eps_neg, rel=1e-4)  # as above


@torch.no_grad()
def test_scalar_timestep_is_broadcast(parts):
    unet, text, x, _ = parts
    states = text(T_INFO)
    eps_pos, _ = dual_forward(unet, x, torch.tensor(500), states, states)
    ref = unet(x, torch.tensor([500, 500]), encoder_hidden_states=states).sample
    assert_close_to_scale(eps_pos, ref, rel=1e-4)  # batches of 4 and 2, as above


@torch.no_grad()
def test_equal_prompt_states_take_one_forward_of_size_b(parts):
    """Eq. 6 with ε_pos = ε_neg is ε for any w: the mode `none` pays for one branch."""
    unet, text, x, t = parts
    calls = []
    handle = unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        empty = text(["", ""])
        shared = guided_noise(unet, x, t, empty, empty.clone(), 7.0)
        guided_noise(unet, x, t, text(T_INFO), empty, 7.0)
    finally:
        handle.remove()
    assert calls == [2, 4]  # equal states: one call of B; different states: one call of 2B
    eps_pos, eps_neg = dual_forward(unet, x, t, empty, empty)
    assert_close_to_scale(shared, combine(eps_pos, eps_neg, 7.0), rel=1e-4)  # as above
