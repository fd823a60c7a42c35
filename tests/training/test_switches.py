"""Speed switches of ``DCGDModule``: each is on when asked, and changes nothing it should not."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from torch.utils.data import DataLoader

from dcgd.components.latent_space import tiny_vae_config
from dcgd.errors import ConfigError
from dcgd.training.optim import adam
from tests.training.tiny import make_batch, tiny_module

VAE = {"latent_space": "vae", "vae_config": tiny_vae_config()}
# Two channels per GroupNorm group: with one (the [8, 16] default of the tiny tests), a conv
# bias before a norm has a zero gradient, and Adam turns its float noise into whole steps.
WIDE = {"unet_config": {"block_out_channels": [16, 32]}}


def _loss_and_grads(module, batch, seed: int = 0):
    module.zero_grad(set_to_none=True)
    loss = module.diffusion_loss(batch, torch.Generator().manual_seed(seed))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.unet.named_parameters()}


def _assert_same_training(a, b, batch):
    """The same loss and gradients, to the rounding of other kernels (other layouts, attention
    implementations or recomputation sum the same terms in another order)."""
    loss_a, grads_a = _loss_and_grads(a, batch)
    loss_b, grads_b = _loss_and_grads(b, batch)
    # A mean of ~1e4 squares: rounding moves it by ~1e-7 of itself.
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    # Each gradient elementwise within 1e-3 of its tensor's largest element: rounding moves
    # them by ~1e-5 of that (the error of a sum scales with its terms, not with the result,
    # which may cancel to ~0), a wrong gradient by ~1x. Tensors that are 0 but for float noise
    # (a bias before a GroupNorm of one channel per group: 4e-7 of the model's largest
    # gradient at most, against 2e-4 for the smallest real one) are compared as noise.
    largest = max(float(grad.abs().max()) for grad in grads_a.values())
    for name, grad in grads_a.items():
        if grad.abs().max() < 1e-5 * largest:
            assert grads_b[name].abs().max() < 1e-5 * largest, name
        else:
            atol = 1e-3 * float(grad.abs().max())
            torch.testing.assert_close(grads_b[name], grad, rtol=0, atol=atol, msg=name)


def test_sdpa_and_classic_attention_compute_the_same(batch):
    sdpa, classic = tiny_module(**VAE), tiny_module(**VAE, attention="classic")
    for module, kind in ((sdpa, AttnProcessor2_0), (classic, AttnProcessor)):
        for model in (module.unet, module.space.vae, module.ema.model if module.ema else None):
            if model is not None:
                assert {type(p) for p in model.attn_processors.values()} == {kind}
    _assert_same_training(sdpa, classic, batch)


def test_channels_last_changes_the_layout_not_the_result(batch):
    plain, nhwc = tiny_module(), tiny_module(channels_last=True, ema_decay=0.9)
    weight = nhwc.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert nhwc.ema.model.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_same_training(plain, nhwc, batch)
    # A checkpoint loads into the channels-last module without changing its layout.
    nhwc.load_state_dict(plain.state_dict(), strict=False)
    assert nhwc.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def _saved_bytes(module, batch) -> int:
    """Bytes of activations the forward pass keeps for the backward pass."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = module.diffusion_loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    return sum(saved)


def test_gradient_checkpointing_stores_less_and_gives_the_same_gradients(batch):
    plain, checkpointed = tiny_module(), tiny_module(gradient_checkpointing=True)
    _assert_same_training(plain, checkpointed, batch)
    # The checkpointed blocks keep only their inputs; the rest is recomputed in backward.
    assert _saved_bytes(checkpointed.train(), batch) < 0.5 * _saved_bytes(plain.train(), batch)


@pytest.mark.slow
def test_compiled_unet_is_used_and_computes_the_same(batch):
    """``compile_unet`` on CPU, with TorchDynamo's ``eager`` backend: the graph capture of our
    U-Net is what this checks (inductor's C++ compile takes minutes on 2 CPU cores)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    plain = tiny_module(ema_decay=0.9)
    compiled = tiny_module(ema_decay=0.9, compile_unet=True, compile_options={"backend": "eager"})
    keys = list(compiled.state_dict())
    compiled.setup("fit")  # what the Trainer calls in every process
    _assert_same_training(plain, compiled, batch)
    assert counters["stats"]["unique_graphs"] > 0  # the U-Net ran through TorchDynamo
    assert list(compiled.state_dict()) == keys  # checkpoints keep their keys
    torch._dynamo.reset()


def test_fused_adam_takes_the_same_steps(batch):
    plain = tiny_module(**WIDE, lr=1e-3)
    fused = tiny_module(**WIDE, lr=1e-3, fused_optimizer=True)
    start = {n: p.detach().clone() for n, p in plain.unet.named_parameters()}
    first = {}
    for module in (plain, fused):
        optimizer = module.configure_optimizers()
        for step in range(3):
            optimizer.zero_grad()
            module.diffusion_loss(batch, torch.Generator().manual_seed(step)).backward()
            optimizer.step()
            if step == 0:
                first[module] = [p.detach().clone() for p in module.unet.parameters()]
        module.optimizer = optimizer
    assert fused.optimizer.defaults["fused"] and not plain.optimizer.defaults["fused"]
    # The first step, from the same weights and the same gradients bit for bit (one process,
    # the same kernels): only the optimizers' arithmetic differs, by a few ulps of the weight
    # and of the step (lr = 1e-3), elementwise.
    names = list(start)
    for name, a, b in zip(names, first[plain], first[fused], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-8, msg=name)
    # After 3 steps, as a whole within 1e-3 of how far they moved (~1e-6 here): the later
    # gradients differ by rounding, and an element whose gradient is near 0 takes an Adam
    # step whose size float noise sets (Adam divides by the gradient's root mean square).
    plain_now, fused_now = dict(plain.unet.named_parameters()), dict(fused.unet.named_parameters())
    moved = torch.cat([(plain_now[n] - start[n]).detach().flatten() for n in names]).norm()
    apart = torch.cat([(fused_now[n] - plain_now[n]).detach().flatten() for n in names]).norm()
    assert moved > 0.1 and apart < 1e-3 * moved, (float(apart), float(moved))


def test_fused_adam_falls_back_with_a_warning_where_torch_has_none():
    params = [torch.nn.Parameter(torch.zeros(3, device="meta"))]  # no fused kernel on meta
    with pytest.warns(UserWarning, match="no fused Adam for parameters of meta"):
        optimizer = adam([{"params": params}], lr=1e-3, weight_decay=0.0, fused=True)
    assert isinstance(optimizer, torch.optim.Adam) and not optimizer.defaults["fused"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(adam([{"params": params}], 1e-3, 0.01, fused=False), torch.optim.AdamW)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_loss_under_autocast_is_close_to_fp32(batch, dtype):
    module = tiny_module(**VAE)
    fp32 = module.diffusion_loss(batch, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=dtype):
        low = module.diffusion_loss(batch, torch.Generator().manual_seed(0))
    assert low.dtype == torch.float32  # the MSE is taken in fp32
    assert low != fp32  # autocast did run the network in low precision...
    torch.testing.assert_close(low, fp32, rtol=2e-2, atol=0)  # ...and the loss barely moved


class _OutputDtypes(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.dtypes = []
        pl_module.unet.register_forward_hook(lambda m, i, out: self.dtypes.append(out.sample.dtype))


def test_a_bf16_mixed_fit_on_cpu_with_the_switches_on(tmp_path):
    """The Trainer's ``bf16-mixed`` with every switch that runs on a CPU, in the real loop."""
    module = tiny_module(
        **VAE,
        channels_last=True,
        gradient_checkpointing=True,
        fused_optimizer=True,
        cache_encodings=True,
        ema_decay=0.9,
    )
    batch = make_batch()
    loader = DataLoader([batch] * 3, batch_size=None)
    dtypes = _OutputDtypes()
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[dtypes],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=loader)
    assert dtypes.dtypes == [torch.bfloat16] * 3
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    # Steps 2 and 3 saw the same images and prompts: served from the cache.
    assert module.encoding_cache.hits > 0


def test_cached_encodings_give_the_loss_computed_each_time(batch):
    plain, cached = tiny_module(**VAE), tiny_module(**VAE, cache_encodings=True)
    cache = cached.encoding_cache
    for seed in (0, 1):  # a miss, then hits
        want = plain.diffusion_loss(batch, torch.Generator().manual_seed(seed))
        got = cached.diffusion_loss(batch, torch.Generator().manual_seed(seed))
        # The batch is encoded whole, as the plain module encodes it (the same kernels), and
        # reused as it was: the same loss bit for bit (rtol leaves a few ulps).
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    # 2 target posteriors, 2x2 condition latents (paper_mask: object, context), 4 prompts:
    # each encoded on the first call only.
    assert cache.misses == len(cache) and cache.hits == cache.misses

    # Keys are content: a changed target is encoded anew, the unchanged inputs are not.
    changed = copy.deepcopy(batch)
    changed["target"][0, :, 0, 0] += 0.5
    misses = cache.misses
    want = plain.diffusion_loss(changed, torch.Generator().manual_seed(2))
    # One sample encoded alone (the miss), the rest from the cache: other kernel shapes, so
    # the loss agrees to rounding (~2e-7 here; the default tolerance is ~1e-5 of it).
    torch.testing.assert_close(
        cached.diffusion_loss(changed, torch.Generator().manual_seed(2)), want
    )
    assert cache.misses == misses + 1


def test_the_cache_is_bounded_least_recently_used_first(batch):
    module = tiny_module(**VAE, cache_encodings=True, cache_gib=0.0)
    module.diffusion_loss(batch, torch.Generator().manual_seed(0))
    assert len(module.encoding_cache) == 0 and module.encoding_cache.bytes == 0


def test_unsupported_combinations_say_what_to_do():
    with pytest.raises(ConfigError, match="text_lr trains the text encoder"):
        tiny_module(cache_encodings=True, text_lr=1e-5)
    with pytest.raises(ConfigError, match="attention"):
        tiny_module(attention="flash")
    with pytest.raises(ConfigError, match="compile_unet"):
        tiny_module(compile_options={"mode": "max-autotune"})
