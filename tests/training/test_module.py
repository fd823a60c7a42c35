"""``DCGDModule``: eq. 7 against a reference written from the paper, construction, EMA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dcgd.components.latent_space import VAESpace
from dcgd.errors import ConfigError
from dcgd.training.ema import EMA
from tests.training.tiny import make_batch, tiny_module


def _draws(seed: int, shape: tuple[int, ...], batch: int):
    """The noise and timesteps ``diffusion_loss`` draws from a generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=gen)
    timesteps = torch.randint(0, 1000, (batch,), generator=gen)
    return noise, timesteps


@torch.no_grad()
@pytest.mark.parametrize("w_train", [1.0, 2.0])
def test_combined_loss_is_eq7(batch, w_train):
    module = tiny_module(w_train=w_train, layout="paper_mask")
    loss = module.diffusion_loss(batch, torch.Generator().manual_seed(5))

    s, o, y = batch["source"], batch["mask"], batch["target"]
    noise, t = _draws(5, y.shape, 2)
    z_t = module.noise_scheduler.add_noise(y, noise, t)
    x = torch.cat([z_t, o, s * o, s * (1 - o)], dim=1)  # eq. 5 (+ mask), pixel space
    eps_pos = module.unet(x, t, encoder_hidden_states=module.text(batch["t_info"])).sample
    eps_neg = module.unet(x, t, encoder_hidden_states=module.text(batch["t_mask"])).sample
    eps_hat = w_train * eps_pos + (1 - w_train) * eps_neg  # eq. 6
    torch.testing.assert_close(loss, ((noise - eps_hat) ** 2).mean(), rtol=1e-4, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize(("dropout", "prompts"), [(0.0, "t_info"), (1.0, None)])
def test_branches_loss_supervises_the_positive_branch(batch, dropout, prompts):
    module = tiny_module(loss="branches", prompt_dropout=dropout, layout="paper")
    loss = module.diffusion_loss(batch, torch.Generator().manual_seed(3))

    s, o, y = batch["source"], batch["mask"], batch["target"]
    noise, t = _draws(3, y.shape, 2)
    x = torch.cat([module.noise_scheduler.add_noise(y, noise, t), s * o, s * (1 - o)], dim=1)
    text = batch[prompts] if prompts else ["", ""]  # dropout 1: every prompt becomes ""
    pred = module.unet(x, t, encoder_hidden_states=module.text(text)).sample
    torch.testing.assert_close(loss, F.mse_loss(pred, noise), rtol=1e-4, atol=1e-6)


def _unet_inputs(module, batch):
    """What the U-Net receives in one training loss: (input tensor, text states) per call."""
    seen = []

    def hook(_, args, kwargs):
        seen.append((args[0].clone(), kwargs["encoder_hidden_states"].clone()))

    handle = module.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        module.diffusion_loss(batch, torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    return seen


@torch.no_grad()
@pytest.mark.parametrize("layout", ["paper_mask", "paper", "inpaint"])
def test_target_inside_the_mask_reaches_no_condition_input(layout):
    """The leak invariant (DESIGN.md §2), model side: only z_t (the noised target, the
    regression goal) may depend on the target; the condition channels and the prompts
    may not, and sampling does not see the target at all."""
    module = tiny_module(layout=layout).eval()
    a = make_batch()
    b = make_batch()
    b["target"] = torch.where(b["mask"] > 0, -a["target"], a["target"])
    ((x_a, states_a),) = _unet_inputs(module, a)
    ((x_b, states_b),) = _unet_inputs(module, b)
    latent = module.space.channels
    assert not torch.equal(x_a[:, :latent], x_b[:, :latent])  # the hook sees the target...
    torch.testing.assert_close(x_a[:, latent:], x_b[:, latent:], rtol=0, atol=0)  # ...only there
    torch.testing.assert_close(states_a, states_b, rtol=0, atol=0)
    torch.testing.assert_close(module.sample(a), module.sample(b), rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("sd", ["tiny_sd_inpaint", "tiny_sd"])
def test_module_from_pretrained_stable_diffusion_starts_where_it_did(sd, request):
    directory = str(request.getfixturevalue(sd))
    module = tiny_module(
        pretrained_model=directory,
        latent_space="vae",
        unet_config=None,
        text_encoder=None,
        layout="paper_mask",
    ).eval()
    from dcgd.components.unet import load_unet

    pretrained = load_unet(directory).eval()
    assert isinstance(module.space, VAESpace)
    assert module.unet.config.in_channels == 13
    gen = torch.Generator().manual_seed(0)
    z, ctx, obj = torch.randn(3, 1, 4, 16, 16, generator=gen)
    m = torch.ones(1, 1, 16, 16)
    states = module.text(["a photo of a street"])
    t = torch.tensor([400])
    old_input = torch.cat([z, m, ctx], 1) if pretrained.config.in_channels == 9 else z
    want = pretrained(old_input, t, encoder_hidden_states=states).sample
    got = module.unet(torch.cat([z, m, obj, ctx], 1), t, encoder_hidden_states=states).sample
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_bad_settings_are_config_errors(batch):
    with pytest.raises(ConfigError, match="layout"):
        tiny_module(layout="paper_plus")
    with pytest.raises(ConfigError, match="loss"):
        tiny_module(loss="both")
    with pytest.raises(ConfigError, match="derived"):
        tiny_module(unet_config={"in_channels": 5})
    module = tiny_module()
    del batch["t_info"], batch["t_mask"]
    with pytest.raises(ConfigError, match="describer"):
        module.diffusion_loss(batch)
    assert torch.isfinite(tiny_module(prompt_mode="none").diffusion_loss(batch))


def test_ema_follows_the_warmed_up_decay():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    start = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # first update: decay min(0.9, 1/10) = 0.1
    for e, s, p in zip(ema.model.parameters(), start, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.1 * s + 0.9 * p)
    assert int(ema.num_updates) == 1 and ema.current_decay() == pytest.approx(2 / 11)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_weights_are_in_the_state_dict():
    module = tiny_module(ema_decay=0.99)
    keys = module.state_dict().keys()
    assert any(k.startswith("ema.model.conv_in") for k in keys) and "ema.num_updates" in keys


@torch.no_grad()
def test_min_snr_weighting_follows_its_formula(batch):
    module = tiny_module(snr_gamma=5.0, w_train=1.0, prompt_mode="positive")
    loss = module.diffusion_loss(batch, torch.Generator().manual_seed(0))

    s, o, y = batch["source"], batch["mask"], batch["target"]
    noise, t = _draws(0, y.shape, 2)
    x = torch.cat([module.noise_scheduler.add_noise(y, noise, t), o, s * o, s * (1 - o)], dim=1)
    pred = module.unet(x, t, encoder_hidden_states=module.text(batch["t_info"])).sample
    per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
    alpha_bar = module.noise_scheduler.alphas_cumprod[t]
    snr = alpha_bar / (1 - alpha_bar)
    weight = torch.clamp(snr, max=5.0) / snr  # Min-SNR-γ (Hang et al.) for ε-prediction
    assert weight.min() < 1  # seed 0 draws t = 694 and 122: one weighted, one not
    torch.testing.assert_close(loss, (weight * per_sample).mean(), rtol=1e-4, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_each_prediction_type_regresses_onto_its_own_target(batch, prediction_type):
    # The loss and the sampler must read the output the same way: the noise, the velocity
    # v = √ᾱ·ε − √(1−ᾱ)·x₀, or the clean image itself.
    module = tiny_module(w_train=1.0, prompt_mode="positive",
                         noise_schedule={"prediction_type": prediction_type})  # fmt: skip
    loss = module.diffusion_loss(batch, torch.Generator().manual_seed(0))

    s, o, y = batch["source"], batch["mask"], batch["target"]
    noise, t = _draws(0, y.shape, 2)
    x = torch.cat([module.noise_scheduler.add_noise(y, noise, t), o, s * o, s * (1 - o)], dim=1)
    pred = module.unet(x, t, encoder_hidden_states=module.text(batch["t_info"])).sample
    alpha_bar = module.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    goal = {
        "epsilon": noise,
        "v_prediction": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * y,
        "sample": y,
    }[prediction_type]
    torch.testing.assert_close(loss, ((pred - goal) ** 2).mean(), rtol=1e-4, atol=1e-6)


def test_an_unknown_prediction_type_is_refused():
    with pytest.raises(ConfigError, match="prediction_type"):
        tiny_module(noise_schedule={"prediction_type": "flow"})
