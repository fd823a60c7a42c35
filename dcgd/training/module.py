"""``DCGDModule``: the U-Net trained with eq. 7 on the eq. 5 input, sampled with eq. 6.

Read top to bottom: components are built in ``__init__`` (from a pretrained Stable Diffusion
directory / hub id, or from small configs), ``training_step`` is eq. 7, ``validation_step``
scores a denoising loss on fixed noise and samples the fixed validation set with eq. 6.

DDP: every random draw of the loss is a function of the sample (its id) and the step, not of
the rank or the position in the local batch (``dcgd.method.randomness``), so N ranks with
batch B follow the trajectory of one process with batch N·B; validation means are over
samples gathered from all ranks (``dcgd.training.sample_mean``).

Speed switches (each changes how fast, never what is computed, up to float rounding):
``attention``, ``channels_last``, ``gradient_checkpointing``, ``compile_unet``,
``fused_optimizer``, ``cache_encodings``; mixed precision is the Trainer's ``precision``
(``bf16-mixed`` / ``16-mixed``).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F

from dcgd.components.attention import ATTENTION, set_attention
from dcgd.components.latent_space import LatentSpace, PixelSpace, VAESpace
from dcgd.components.schedulers import sampling_scheduler, train_scheduler
from dcgd.components.text_encoder import TextConditioner
from dcgd.components.unet import adapt_conv_in, build_unet, load_unet, tiny_unet_config
from dcgd.errors import ConfigError, DCGDError, ModelLoadError
from dcgd.method.guidance import PROMPT_MODES, guided_noise, select_prompts
from dcgd.method.input import LAYOUTS, assemble, condition_images, layout_channels
from dcgd.method.loss import check_prediction_type, min_snr_weight, prediction_target
from dcgd.method.randomness import (
    Generators,
    draw_integers,
    draw_normal,
    draw_uniform,
    sample_generators,
)
from dcgd.sampling.pipeline import DCGDPipeline, PipelineSettings
from dcgd.sampling.sampler import DCGDSampler
from dcgd.training.ema import EMA
from dcgd.training.encoding_cache import EncodingCache, content_keys, text_keys
from dcgd.training.optim import adam
from dcgd.training.sample_mean import SampleMean, id_keys
from dcgd.validation import finite, whole


class DCGDModule(L.LightningModule):
    """Dual-CLIP Guided Diffusion for object removal.

    Args:
        pretrained_model: Stable Diffusion (inpainting) hub id or local directory. Its
            ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/`` are used
            unless overridden below. ``None`` builds everything from the configs below.
        unet_config: build the U-Net from scratch: keys of ``UNet2DConditionModel`` merged
            over a tiny two-level default. ``in_channels``, ``out_channels`` and
            ``cross_attention_dim`` are derived from the layout, latent space and text encoder.
        latent_space: ``vae`` (the paper, Stable Diffusion) or ``pixel`` (tiny runs).
        vae_config: build the VAE from an ``AutoencoderKL`` config instead of loading it.
        text_encoder: directory of a (fine-tuned) text encoder saved by ``TextEncoderModule``
            or in the Stable Diffusion layout, or ``tiny``; ``None`` takes the pretrained one.
        text_encoder_config: keyword arguments of ``TextConditioner.tiny`` when ``tiny``.
        layout: U-Net input of eq. 5: ``paper``, ``paper_mask`` or ``inpaint``.
        prompt_mode: prompt ablation: ``none``, ``positive``, ``negative`` or ``dual``.
        loss: ``combined`` (eq. 7: MSE on the eq. 6 combination) or ``branches`` (standard
            CFG training: MSE on the positive branch, prompts dropped to "" at random).
        w_train: guidance weight inside the eq. 7 loss (``combined`` only).
        w: guidance weight for sampling (validation, ``remove``).
        prompt_dropout: probability of replacing a prompt by "" (``branches`` only).
        lr: learning rate of the U-Net (Adam, as the paper; AdamW when ``weight_decay`` > 0).
        text_lr: learning rate of the text encoder for joint fine-tuning; ``None`` freezes it.
        weight_decay: AdamW weight decay.
        ema_decay: EMA decay of the U-Net weights; ``None`` disables EMA.
        snr_gamma: Min-SNR loss weighting γ (5.0 is the usual value); ``None`` disables it.
        noise_schedule: overrides of the DDPM training schedule.
        sampler: ``ddim``, ``dpmsolver++``, ``euler`` or ``ddpm`` for validation sampling.
        val_steps: sampling steps in validation.
        seed: seed of the validation noise (sampling and denoising loss).
        grid_samples: how many validation samples go into the logged image grid.
        attention: attention kernel of the U-Net and VAE: ``sdpa`` (PyTorch's
            ``scaled_dot_product_attention``, diffusers' default) or ``classic`` (explicit
            softmax, the reference).
        channels_last: store the U-Net's conv weights channels-last (NHWC): faster
            convolutions on tensor-core GPUs under bf16 / fp16.
        gradient_checkpointing: recompute the U-Net's activations in the backward pass
            instead of storing them: less memory (bigger batches at 512 px), ~30% more time.
        compile_unet: ``torch.compile`` the U-Net (and its EMA copy) when a Trainer sets the
            module up; the first steps pay for the compilation.
        compile_options: keyword arguments of ``torch.compile`` (e.g. ``{"mode":
            "max-autotune"}``); needs ``compile_unet``.
        fused_optimizer: PyTorch's fused Adam / AdamW kernel (falls back with a warning
            where there is none).
        cache_encodings: keep the frozen encoders' outputs (target posterior, condition
            latents, prompt states) in memory, keyed by content, and reuse them when an input
            repeats; the loss is the same. Refused while the text encoder trains.
        cache_gib: memory the encoding cache may hold (per process, on the model's device).
    """

    def __init__(
        self,
        pretrained_model: str | None = None,
        unet_config: dict[str, Any] | None = None,
        latent_space: Literal["vae", "pixel"] = "vae",
        vae_config: dict[str, Any] | None = None,
        text_encoder: str | None = None,
        text_encoder_config: dict[str, Any] | None = None,
        layout: Literal["paper", "paper_mask", "inpaint"] = "paper_mask",
        prompt_mode: Literal["none", "positive", "negative", "dual"] = "dual",
        loss: Literal["combined", "branches"] = "combined",
        w_train: float = 1.5,
        w: float = 1.5,
        prompt_dropout: float = 0.1,
        lr: float = 1e-4,
        text_lr: float | None = None,
        weight_decay: float = 0.0,
        ema_decay: float | None = 0.9999,
        snr_gamma: float | None = None,
        noise_schedule: dict[str, Any] | None = None,
        sampler: str = "ddim",
        val_steps: int = 25,
        seed: int = 0,
        grid_samples: int = 8,
        attention: Literal["sdpa", "classic"] = "sdpa",
        channels_last: bool = False,
        gradient_checkpointing: bool = False,
        compile_unet: bool = False,
        compile_options: dict[str, Any] | None = None,
        fused_optimizer: bool = False,
        cache_encodings: bool = False,
        cache_gib: float = 2.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Numbers first, before any model is loaded: a NaN or zero learning rate, or an EMA
        # decay of 1 (weights that never move), would otherwise train for hours to nothing.
        finite("lr", lr, 0, low_open=True)
        if text_lr is not None:
            finite("text_lr", text_lr, 0, low_open=True)
        finite("w", w)
        finite("w_train", w_train)
        finite("prompt_dropout", prompt_dropout, 0, 1)
        finite("weight_decay", weight_decay, 0)
        if ema_decay is not None:
            finite("ema_decay", ema_decay, 0, 1, high_open=True)
        if snr_gamma is not None:
            finite("snr_gamma", snr_gamma, 0, low_open=True)
        finite("cache_gib", cache_gib, 0)  # 0: a cache that holds nothing (caching off)
        whole("val_steps", val_steps, 1)
        whole("grid_samples", grid_samples, 0)
        whole("seed", seed, 0)
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if prompt_mode not in PROMPT_MODES:
            raise ConfigError(f"prompt_mode must be one of {PROMPT_MODES}, got {prompt_mode!r}")
        if loss not in ("combined", "branches"):
            raise ConfigError(f"loss must be 'combined' or 'branches', got {loss!r}")
        if pretrained_model is None and (unet_config is None or text_encoder is None):
            raise ConfigError(
                "without pretrained_model, give unet_config (e.g. {} for the tiny default) and "
                "text_encoder (a directory or 'tiny')"
            )

        if attention not in ATTENTION:
            raise ConfigError(f"attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
        if compile_options is not None and not compile_unet:
            raise ConfigError("compile_options are given but compile_unet is false; set both")
        if cache_encodings and text_lr is not None:
            raise ConfigError(
                "cache_encodings keeps the text encoder's prompt states, but text_lr trains the "
                "text encoder, so every cached state would be stale after the next step. Freeze "
                "it (text_lr: null) or turn the cache off (cache_encodings: false)."
            )

        self.space = self._build_latent_space()
        self.text = self._build_text_encoder()
        self.unet = self._build_unet()
        self._apply_speed_switches()
        self.ema = EMA(self.unet, ema_decay) if ema_decay is not None else None
        self.noise_scheduler = train_scheduler(pretrained_model, noise_schedule)
        check_prediction_type(self.noise_scheduler.config.prediction_type)
        self.text.requires_grad_(text_lr is not None)
        self.encoding_cache = self._build_cache()
        # Validation means over samples, each sample once across all ranks.
        self.val_loss_mean = SampleMean()
        self.val_mae_mean = SampleMean()
        self._compiled = False  # see setup
        # Side of the training images, saved in checkpoints: the resolution `remove` works at.
        self.resolution: int | None = None

    # ----------------------------------------------------------------- construction
    def _build_latent_space(self) -> LatentSpace:
        hp = self.hparams
        if hp.latent_space == "pixel":
            return PixelSpace()
        if hp.vae_config is not None:
            from diffusers import AutoencoderKL

            return VAESpace(AutoencoderKL(**hp.vae_config))
        if hp.pretrained_model is None:
            raise ConfigError("latent_space: vae needs pretrained_model or vae_config")
        return VAESpace.from_pretrained(hp.pretrained_model)

    def _build_text_encoder(self) -> TextConditioner:
        hp = self.hparams
        if hp.text_encoder == "tiny":
            return TextConditioner.tiny(**(hp.text_encoder_config or {}))
        if hp.text_encoder is not None:
            return TextConditioner.from_pretrained(hp.text_encoder)
        return TextConditioner.from_pretrained(hp.pretrained_model)

    def _build_unet(self):
        hp = self.hparams
        channels = self.space.channels
        if hp.unet_config is not None:
            derived = {
                "in_channels": layout_channels(hp.layout, channels),
                "out_channels": channels,
                "cross_attention_dim": self.text.hidden_size,
            }
            clash = {k: v for k, v in hp.unet_config.items() if k in derived and v != derived[k]}
            if clash:
                raise ConfigError(
                    f"unet_config sets {clash}, but the layout / latent space / text encoder "
                    f"require {derived}; remove those keys, they are derived"
                )
            # The tiny default's block types follow the number of levels the user asks for.
            shape = {k: hp.unet_config[k] for k in ("block_out_channels",) if k in hp.unet_config}
            config = {**tiny_unet_config(**derived, **shape), **hp.unet_config, **derived}
            return build_unet(config)
        unet = load_unet(hp.pretrained_model)
        if unet.config.cross_attention_dim != self.text.hidden_size:
            raise ConfigError(
                f"the U-Net attends to {unet.config.cross_attention_dim}-d text states but the "
                f"text encoder gives {self.text.hidden_size}-d; use the matching text encoder"
            )
        return adapt_conv_in(unet, hp.layout, channels)

    def _apply_speed_switches(self) -> None:
        """Before the EMA copy is made, so that it runs the same way."""
        hp = self.hparams
        set_attention(self.unet, hp.attention)
        if isinstance(self.space, VAESpace):
            set_attention(self.space.vae, hp.attention)
        if hp.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if hp.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def _build_cache(self) -> EncodingCache | None:
        if not self.hparams.cache_encodings:
            return None
        config = self.text.model.config
        dropout = {
            k: getattr(config, k, 0.0)
            for k in ("dropout", "attention_dropout", "hidden_dropout")
            if getattr(config, k, 0.0)
        }
        if dropout:
            raise ConfigError(
                f"cache_encodings needs a deterministic text encoder, but it applies dropout "
                f"{dropout}: its states change from call to call. Turn the cache off."
            )
        return EncodingCache(int(self.hparams.cache_gib * 2**30))

    def setup(self, stage: str) -> None:
        if self.hparams.compile_unet and not self._compiled:
            # In setup, not __init__: each (spawned) process compiles its own copy, and the
            # module stays picklable. nn.Module.compile keeps the state-dict keys unchanged
            # and is lazy: the EMA copy compiles at the first validation that samples with it.
            options = self.hparams.compile_options or {}
            self.unet.compile(**options)
            if self.ema is not None:
                self.ema.model.compile(**options)
            self._compiled = True  # fit, then test in one process: compile once

    # ----------------------------------------------------------------- eq. 7
    def _prompt_states(self, t_pos: list[str], t_neg: list[str]) -> tuple[torch.Tensor, ...]:
        """Both prompt sets through τθ in one call (cached per prompt when frozen)."""
        prompts = t_pos + t_neg
        if self.encoding_cache is not None:
            states = self.encoding_cache.lookup(
                text_keys("text", prompts, self.device),
                lambda rows: self.text([prompts[i] for i in rows]),
            )
        else:
            with torch.set_grad_enabled(self.hparams.text_lr is not None and self.training):
                states = self.text(prompts)
        return states[: len(t_pos)], states[len(t_pos) :]

    def _encoded(self, kind: str, images: torch.Tensor, encode) -> torch.Tensor:
        """``encode(images)``, through the cache in a VAE latent space."""
        if self.encoding_cache is None or isinstance(self.space, PixelSpace):
            return encode(images)
        return self.encoding_cache.lookup(
            content_keys(kind, images), lambda rows: encode(images[rows])
        )

    def _conditions(self, source: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latents of the layout's condition images (eq. 5), from the source only."""
        images = condition_images(source, mask)
        groups = [g for g in LAYOUTS[self.hparams.layout] if g in images]
        return {g: self._encoded("latent", images[g], self.space.encode) for g in groups}

    def diffusion_loss(self, batch: dict[str, Any], generator: Generators = None) -> torch.Tensor:
        """Eq. 7 (``combined``) or the standard CFG objective (``branches``) on one batch.

        ``generator``: one per sample (what training passes, see :meth:`step_generators`) or
        one for the whole batch."""
        return self.per_sample_loss(batch, generator).mean()

    def per_sample_loss(self, batch: dict[str, Any], generator: Generators = None) -> torch.Tensor:
        """The loss of each sample, ``[B]``."""
        hp = self.hparams
        source, target, mask = batch["source"], batch["target"], batch["mask"]
        posterior = self._encoded("posterior", target, self.space.posterior)
        latents = self.space.latents(posterior, sample=True, generator=generator)
        conditions = self._conditions(source, mask)
        noise = draw_normal(latents.shape, generator, latents.device, latents.dtype)
        timesteps = draw_integers(
            self.noise_scheduler.config.num_train_timesteps,
            latents.shape[0],
            generator,
            latents.device,
        )
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        unet_in = assemble(hp.layout, noisy, mask, conditions)
        t_pos, t_neg = select_prompts(hp.prompt_mode, *self._descriptions(batch))

        if hp.loss == "combined":
            states_pos, states_neg = self._prompt_states(t_pos, t_neg)
            pred = guided_noise(self.unet, unet_in, timesteps, states_pos, states_neg, hp.w_train)
        else:
            draw = draw_uniform(len(t_pos), generator, latents.device)
            keep = draw >= hp.prompt_dropout
            t_pos = [p if k else "" for p, k in zip(t_pos, keep.tolist(), strict=True)]
            states_pos, _ = self._prompt_states(t_pos, [])
            pred = self.unet(unet_in, timesteps, encoder_hidden_states=states_pos).sample

        goal = prediction_target(self.noise_scheduler, latents, noise, timesteps)
        per_sample = F.mse_loss(pred.float(), goal.float(), reduction="none").mean(dim=(1, 2, 3))
        if hp.snr_gamma is not None:
            per_sample = per_sample * min_snr_weight(self.noise_scheduler, timesteps, hp.snr_gamma)
        return per_sample

    def _descriptions(self, batch: dict[str, Any]) -> tuple[list[str], list[str]]:
        """``(t_info, t_mask)`` of a batch; "" for all when the prompt mode uses neither."""
        if "t_info" in batch and "t_mask" in batch:
            return list(batch["t_info"]), list(batch["t_mask"])
        if self.hparams.prompt_mode == "none":
            return [""] * len(batch["source"]), [""] * len(batch["source"])
        raise ConfigError(
            f"prompt_mode {self.hparams.prompt_mode!r} needs descriptions but the batch has no "
            "t_info / t_mask: set data.init_args.describer (e.g. LabelDescriber for the built-in "
            "data, ClipRegionDescriber for real images) or use prompt_mode: none"
        )

    def _sample_ids(self, batch: dict[str, Any], where: str) -> list[str]:
        """The batch's sample ids; without them, positions on this rank (then a sample's
        noise depends on the rank and batch layout: give ids for exact DDP equivalence)."""
        if batch.get("id") is not None:
            return [str(i) for i in batch["id"]]
        return [f"{where}/rank{self.global_rank}/{i}" for i in range(len(batch["source"]))]

    def step_generators(self, batch: dict[str, Any]) -> list[torch.Generator]:
        """One generator per sample, seeded by (seed, step, sample id): the same draws on any
        number of ranks, and exact resumes with no RNG state to save."""
        where = f"step{self.global_step}"
        return sample_generators(self._sample_ids(batch, where), self.hparams.seed, where)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.resolution = int(max(batch["source"].shape[-2:]))
        loss = self.diffusion_loss(batch, self.step_generators(batch))
        if not torch.isfinite(loss):
            raise DCGDError(
                f"the training loss became {loss.item()} at step {self.global_step}. The last "
                "checkpoint is intact: resume from it with --ckpt_path last after lowering the "
                "learning rate or setting trainer.gradient_clip_val (e.g. 1.0)."
            )
        # sync_dist: the logged curve is the loss of the global batch, whatever the world size.
        self.log(
            "train/loss", loss, prog_bar=True, batch_size=batch["source"].shape[0], sync_dist=True
        )
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: callbacks (ModelCheckpoint) run that hook BEFORE the
        # module's, so a checkpoint would hold weights one EMA update ahead of their average.
        # Once per optimizer step also keeps gradient accumulation right.
        if self.ema is not None:
            self.ema.update(self.unet)

    # ----------------------------------------------------------------- sampling
    def sampler(self, use_ema: bool = True, name: str | None = None) -> DCGDSampler:
        """The bare eq. 6 sampler (every setting passed per call); see also :meth:`pipeline`."""
        unet = self.ema.model if (use_ema and self.ema is not None) else self.unet
        scheduler = sampling_scheduler(name or self.hparams.sampler, self.noise_scheduler)
        return DCGDSampler(unet, self.space, self.text, scheduler, self.hparams.layout)

    def pipeline(self, use_ema: bool = True) -> DCGDPipeline:
        """The sampling pipeline of this module (shares its weights; EMA U-Net by default)."""
        hp = self.hparams
        unet = self.ema.model if (use_ema and self.ema is not None) else self.unet
        resolution = self.resolution or unet.config.sample_size * self.space.downsample
        settings = PipelineSettings(
            layout=hp.layout,
            latent_space="pixel" if isinstance(self.space, PixelSpace) else "vae",
            resolution=int(resolution),
            prompt_mode=hp.prompt_mode,
            w=hp.w,
            sampler=hp.sampler,
            steps=hp.val_steps,
            seed=hp.seed,
        )
        return DCGDPipeline(unet, self.space, self.text, self.noise_scheduler, settings)

    def sample(self, batch: dict[str, Any], **overrides: Any) -> torch.Tensor:
        """Remove the masked objects of a batch with eq. 6; settings default to the config."""
        t_info, t_mask = self._descriptions(batch)
        return self.pipeline()(
            batch["source"], batch["mask"], t_info, t_mask, ids=batch.get("id"), **overrides
        )

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        ids = self._sample_ids(batch, f"val{batch_idx}")
        keys = id_keys(ids, self.device)
        # Fixed noise per sample, so val/loss curves compare across steps, runs and ranks.
        losses = self.per_sample_loss(batch, sample_generators(ids, self.hparams.seed, "val"))
        self.val_loss_mean.update(losses, keys)
        self.log("val/loss", self.val_loss_mean, on_step=False, on_epoch=True)
        result = self.sample(batch)
        self._validation_outputs(batch, result, batch_idx, keys)

    def _validation_outputs(
        self, batch: dict[str, Any], result: torch.Tensor, batch_idx: int, keys: torch.Tensor
    ) -> None:
        """Metrics and image grids: filled in by the evaluation and tracking layers."""
        from dcgd.tracking.images import log_validation_grid

        mae = (result - batch["target"]).abs().mean(dim=(1, 2, 3)) / 2  # on [0,1], per image
        self.val_mae_mean.update(mae, keys)
        self.log("val/mae", self.val_mae_mean, on_step=False, on_epoch=True)
        if batch_idx == 0:
            log_validation_grid(self, batch, result, self.hparams.grid_samples)

    # ----------------------------------------------------------------- test / predict
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Sample the fixed test set with eq. 6; scoring and tables are the evaluation
        callback's job (it receives this dict in ``on_test_batch_end``)."""
        return {"result": self.sample(batch)}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"id": batch.get("id"), "result": self.sample(batch)}

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        groups = [{"params": list(self.unet.parameters()), "lr": hp.lr}]
        if hp.text_lr is not None:
            groups.append({"params": list(self.text.parameters()), "lr": hp.text_lr})
        return adam(groups, hp.lr, hp.weight_decay, hp.fused_optimizer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["dcgd"] = {"resolution": self.resolution}
        # Global RNG states, so that a resumed run draws the same noise as an uninterrupted one.
        checkpoint["dcgd_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.resolution = checkpoint.get("dcgd", {}).get("resolution")
        rng = checkpoint.get("dcgd_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: dict[str, Any]) -> DCGDModule:
        """Rebuild from a loaded checkpoint for inference (global RNG left alone)."""
        # LightningCLI adds private keys (``_instantiator``, ``_class_path``) to the hparams.
        hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
        try:
            module = cls(**hparams)
        except TypeError as err:
            raise ModelLoadError(
                f"the checkpoint's settings do not fit this version of DCGDModule: {err}"
            ) from None
        module.load_state_dict(checkpoint["state_dict"])
        module.resolution = checkpoint.get("dcgd", {}).get("resolution")
        return module.eval()
