"""Speed of dcgd against references doing the same work, in the same process.

- sampling: ``DCGDPipeline`` vs diffusers' ``StableDiffusionInpaintPipeline`` with the
  same U-Net (``inpaint`` layout: 9 channels, the pipeline's own input), VAE, text encoder,
  tokenizer, scheduler, steps and guidance (``prompt`` = T_info, ``negative_prompt`` = T_mask:
  eq. 6 is diffusers' CFG with the negative prompt as the unconditional branch);
- training: the Lightning ``Trainer`` running ``DCGDModule.training_step`` vs a bare PyTorch
  loop written here from the diffusers parts (encode, noise, one 2B forward, eq. 7 loss,
  backward, optimizer step, EMA update).

Timings interleave ours and the reference (ABAB...) and take medians, so drift in the
machine's speed hits both. Ratios are *our time over the reference's*: < 1 is faster.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from dcgd.components.latent_space import tiny_vae_config
from dcgd.devices import resolve_device
from dcgd.errors import ConfigError, DCGDError

if TYPE_CHECKING:
    import lightning as L
    from diffusers import StableDiffusionInpaintPipeline

    from dcgd.training.module import DCGDModule

# SD-1.5's shapes (random weights: speed does not depend on their values).
SD15_UNET = {
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "sample_size": 64,
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_TEXT = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "max_length": 77}

MODEL_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "unet_config": {"sample_size": 32},
        "vae_config": tiny_vae_config(4),
        "text_encoder_config": {"hidden_size": 32},
    },
    "sd15": {"unet_config": SD15_UNET, "vae_config": SD15_VAE, "text_encoder_config": SD15_TEXT},
}


@dataclass
class Settings:
    model_size: str = "tiny"
    resolution: int = 64
    batch: int = 2
    steps: int = 10  # sampling steps
    train_steps: int = 10  # timed training steps (after warm-up)
    warmup: int = 2
    repeats: int = 3  # timed runs of each side (sampling), alternated rounds (training)
    w: float = 1.5
    precision: str = "32"  # "32" or "bf16" (autocast)
    # sampling: also time dcgd with DCGDPipeline.compile() (inductor, frozen weights; the
    # compile itself is not timed), and, with compile_reference, diffusers compiled alike
    # (needs compile)
    compile: bool = True
    compile_reference: bool = False
    compile_backend: str = "inductor"  # torch.compile's; "eager" captures graphs only
    device: str = "auto"
    # DCGDModule arguments over the defaults below, e.g. {"attention": "classic"}: time a
    # speed switch of the training module (the reference side does not change).
    module: dict[str, Any] = field(default_factory=dict)
    # the device's peak dense TFLOP/s at this precision, for model FLOP utilisation; None:
    # looked up in PEAK_TFLOPS by GPU name (no MFU on a CPU or an unknown GPU)
    peak_tflops: float | None = None


# Dense (no sparsity) peak TFLOP/s from the vendors' data sheets, by a substring of
# torch.cuda.get_device_name(); "32" is plain fp32 (PyTorch keeps TF32 off by default).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "32": 67.0},
    "H100 PCIe": {"bf16": 756.0, "32": 51.0},
    "H100": {"bf16": 989.0, "32": 67.0},
    "A100": {"bf16": 312.0, "32": 19.5},
    "L40S": {"bf16": 362.0, "32": 91.6},
    "A10G": {"bf16": 70.0, "32": 31.2},
    "RTX 4090": {"bf16": 165.2, "32": 82.6},
}


def peak_tflops(settings: Settings, device: torch.device) -> float | None:
    """The peak to divide achieved FLOP/s by: ``settings.peak_tflops``, else the table."""
    if settings.peak_tflops is not None:
        return settings.peak_tflops
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():  # the more specific key comes first
        if key in name:
            return peaks.get(settings.precision)
    return None


def build_module(settings: Settings) -> DCGDModule:
    """A ``DCGDModule`` with the ``inpaint`` layout in a VAE latent space, random weights."""
    from dcgd.training.module import DCGDModule

    parts = MODEL_SIZES[settings.model_size]
    torch.manual_seed(0)
    arguments = dict(
        latent_space="vae",
        vae_config=parts["vae_config"],
        unet_config=parts["unet_config"],
        text_encoder="tiny",
        text_encoder_config=parts["text_encoder_config"],
        layout="inpaint",
        prompt_mode="dual",
        loss="combined",
        w_train=settings.w,
        w=settings.w,
        ema_decay=0.9999,
        sampler="ddim",
    )
    arguments.update(settings.module)
    try:
        return DCGDModule(**arguments)
    except TypeError as err:  # an unknown name in --module
        raise ConfigError(f"--module: {err}; see DCGDModule's arguments") from None


def example_batch(settings: Settings, device: torch.device) -> dict[str, Any]:
    """A fixed batch: random images, a centred box mask, short prompts."""
    gen = torch.Generator().manual_seed(0)
    size, batch = settings.resolution, settings.batch
    images = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    mask = torch.zeros(batch, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return {
        "source": (images * (1 - mask)).to(device),
        "target": images.to(device),
        "mask": mask.to(device),
        "t_info": ["a brick wall with red circles"] * batch,
        "t_mask": ["red circle"] * batch,
        "id": [f"bench/{i}" for i in range(batch)],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(settings: Settings, device: torch.device):
    if settings.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def interleaved_medians(
    sides: dict[str, Callable[[], Any]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median seconds of each callable, run in turn (A B C A B C ...) after one warm-up each."""
    for fn in sides.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


# --------------------------------------------------------------------------- sampling
def diffusers_pipeline(module: DCGDModule) -> StableDiffusionInpaintPipeline:
    """diffusers' inpainting pipeline over the module's own components."""
    from diffusers import StableDiffusionInpaintPipeline

    from dcgd.components.schedulers import sampling_scheduler

    return StableDiffusionInpaintPipeline(
        vae=module.space.vae,
        text_encoder=module.text.model,
        tokenizer=module.text.tokenizer,
        unet=module.unet,
        scheduler=sampling_scheduler(module.hparams.sampler, module.noise_scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# Compiled sampling must give eager's images up to float rounding (outputs in [-1, 1]);
# beyond this the speed-up is not of the same computation.
COMPILED_TOLERANCE = 1e-3


class CompiledOutputDiffers(DCGDError):
    """Compiled sampling gave other images than eager sampling."""


def bench_sampling(settings: Settings) -> dict[str, Any]:
    from dcgd.sampling.pipeline import compile_for_sampling, frozen_weights

    device = resolve_device(settings.device)
    module = build_module(settings).to(device).eval()
    batch = example_batch(settings, device)
    sampler = module.pipeline(use_ema=False)
    pipe = diffusers_pipeline(module)
    pipe.set_progress_bar_config(disable=True)
    image01 = (batch["source"] + 1) / 2

    def ours(pipeline=sampler):
        with _autocast(settings, device):
            return pipeline(
                batch["source"], batch["mask"], batch["t_info"], batch["t_mask"],
                prompt_mode="dual", w=settings.w, steps=settings.steps, ids=batch["id"],
                known_region="free",  # as diffusers' 9-channel pipeline: the same work
            )  # fmt: skip

    def reference(pipeline=pipe):
        with _autocast(settings, device):
            return pipeline(
                prompt=batch["t_info"], negative_prompt=batch["t_mask"], image=image01,
                mask_image=batch["mask"], height=settings.resolution, width=settings.resolution,
                num_inference_steps=settings.steps, guidance_scale=settings.w,
                strength=1.0, output_type="pt",
            ).images  # fmt: skip

    sides: dict[str, Callable[[], Any]] = {"dcgd": ours, "diffusers": reference}
    results: dict[str, Any] = {}
    if settings.compile:
        # Own copies of the modules: nn.Module.compile works in place, and the diffusers
        # pipeline shares the module's parts.
        compiled = copy.deepcopy(sampler).compile(settings.compile_backend)
        start = time.perf_counter()
        first = ours(compiled)  # compiles
        results["compile_s"] = time.perf_counter() - start
        difference = (first - ours()).abs().max().item()
        results["compiled_max_abs_difference"] = difference
        if not difference <= COMPILED_TOLERANCE:
            raise CompiledOutputDiffers(
                f"compiled sampling differs from eager by {difference:.2g} (tolerance "
                f"{COMPILED_TOLERANCE}): the compiler changed the result; rerun with --no-compile"
            )
        sides["dcgd_compiled"] = lambda: ours(compiled)
    if settings.compile_reference:
        twin = diffusers_pipeline(copy.deepcopy(module))
        twin.set_progress_bar_config(disable=True)
        compile_for_sampling(twin.unet, twin.vae, settings.compile_backend)

        def reference_compiled():
            with frozen_weights():
                return reference(twin)

        reference_compiled()  # compiles, not timed
        sides["diffusers_compiled"] = reference_compiled

    _reset_peak(device)
    seconds = interleaved_medians(sides, settings.repeats, device)
    per_image = settings.batch
    results.update(
        {
            "sampling_s_per_image": seconds["dcgd"] / per_image,
            "diffusers_s_per_image": seconds["diffusers"] / per_image,
            "sampling_ratio_vs_diffusers": seconds["dcgd"] / seconds["diffusers"],
            "sampling_steps": settings.steps,
            "sampling_peak_gib": _peak_gib(device),
        }
    )
    if "dcgd_compiled" in seconds:
        results["compiled_s_per_image"] = seconds["dcgd_compiled"] / per_image
        results["compiled_ratio_vs_diffusers"] = seconds["dcgd_compiled"] / seconds["diffusers"]
    if "diffusers_compiled" in seconds:
        results["diffusers_compiled_s_per_image"] = seconds["diffusers_compiled"] / per_image
        results["compiled_ratio_vs_diffusers_compiled"] = (
            seconds["dcgd_compiled"] / seconds["diffusers_compiled"]
        )
    return results


# --------------------------------------------------------------------------- training
def bare_training_loop(
    module: DCGDModule, batch: dict[str, Any], steps: int, warmup: int, settings: Settings
) -> float:
    """Seconds per step of the dual-branch step written directly on the diffusers parts."""
    device = batch["source"].device
    unet, vae, text = module.unet, module.space.vae, module.text
    scheduler = module.noise_scheduler
    scale = vae.config.scaling_factor
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-4)
    ema = module.ema
    gen = torch.Generator(device=device).manual_seed(0)
    w = settings.w
    unet.train()
    times = []
    for step in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        with _autocast(settings, device), torch.no_grad():
            latents = vae.encode(batch["target"]).latent_dist.sample(gen) * scale
            hole = batch["source"] * (1 - batch["mask"])
            context = vae.encode(hole).latent_dist.mode() * scale
            small_mask = F.interpolate(batch["mask"], size=latents.shape[-2:], mode="nearest")
            states = text(batch["t_info"] + batch["t_mask"])
        noise = torch.randn(latents.shape, generator=gen, device=device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), device=device)
        noisy = scheduler.add_noise(latents, noise, t)
        x = torch.cat([noisy, small_mask, context], dim=1)
        with _autocast(settings, device):
            out = unet(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=states).sample
        eps_pos, eps_neg = out.chunk(2)
        loss = F.mse_loss((eps_neg + w * (eps_pos - eps_neg)).float(), noise.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(unet)
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


class _StepTimer:
    """Lightning callback: wall time from one batch start to the next (a whole step)."""

    def __init__(self, warmup: int) -> None:
        import lightning as L

        timer = self

        class Callback(L.Callback):
            def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
                _sync(trainer.strategy.root_device)
                timer.starts.append(time.perf_counter())

            def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
                _sync(trainer.strategy.root_device)
                timer.ends.append(time.perf_counter())

        self.warmup = warmup
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.callback = Callback()

    def step_seconds(self) -> float:
        pairs = list(zip(self.starts, self.ends, strict=True))[self.warmup :]
        return statistics.median(end - start for start, end in pairs)


def lightning_training(
    module: DCGDModule, batch: dict[str, Any], steps: int, warmup: int, settings: Settings
) -> float:
    """Seconds per step of ``Trainer.fit`` on the same batch (no logger, checkpoints or bar:
    what is timed is the training step and Lightning's loop around it)."""
    import lightning as L
    from torch.utils.data import DataLoader

    device = batch["source"].device
    cpu_batch = {k: v.cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
    loader = DataLoader([cpu_batch] * (warmup + steps), batch_size=None)
    timer = _StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=warmup + steps,
        precision="bf16-mixed" if settings.precision == "bf16" else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer.callback],
    )
    trainer.fit(module, train_dataloaders=loader)
    return timer.step_seconds()


def training_step_flops(settings: Settings, batch: dict[str, Any]) -> float:
    """FLOPs of one dual-branch training step (VAE and text encoding, U-Net forward and
    backward), counted by PyTorch's FlopCounterMode on the bare loop: the model FLOPs
    that model FLOP utilisation divides by, the same for both sides."""
    from torch.utils.flop_counter import FlopCounterMode

    module = build_module(settings).to(batch["source"].device)
    counter = FlopCounterMode(display=False)
    with counter:
        bare_training_loop(module, batch, steps=1, warmup=0, settings=settings)
    return float(counter.get_total_flops())


def bench_training(settings: Settings) -> dict[str, Any]:
    device = resolve_device(settings.device)
    batch = example_batch(settings, device)
    results = {}
    # Fresh modules with the same weights for each side, alternated ``repeats`` times (at
    # least twice) so that drift in the machine's speed hits both; the best round counts.
    ours, reference = [], []
    for _ in range(max(2, settings.repeats)):
        _reset_peak(device)
        module = build_module(settings).to(device)
        ours.append(
            lightning_training(module, batch, settings.train_steps, settings.warmup, settings)
        )
        results["train_peak_gib"] = _peak_gib(device)
        module = build_module(settings).to(device)
        reference.append(
            bare_training_loop(module, batch, settings.train_steps, settings.warmup, settings)
        )
    ours_s, ref_s = min(ours), min(reference)
    results.update(
        {
            "train_samples_per_s": settings.batch / ours_s,
            "bare_loop_samples_per_s": settings.batch / ref_s,
            "train_ratio_vs_bare_loop": ours_s / ref_s,
        }
    )
    flops = training_step_flops(settings, batch)
    peak = peak_tflops(settings, device)
    results["train_tflops_per_step"] = flops / 1e12
    results["train_achieved_tflops"] = flops / ours_s / 1e12
    results["train_peak_tflops"] = peak
    results["train_mfu"] = flops / ours_s / (peak * 1e12) if peak else None
    return results
