"""``DCGDModule``: the U-Net trained with eq. 7 on the eq. 5 input, sampled with eq. 6.

Wiring only: the components come from ``dcgd.components.build``, the loss from
``dcgd.method.loss`` (eq. 7), sampling from ``dcgd.sampling.pipeline`` (eq. 6); this class
holds them and owns the Lightning hooks (training, validation, test, checkpoints).

DDP: the loss's random draws are functions of (seed, step, sample id), not of the rank
(``dcgd.method.randomness``); validation means are over samples from all ranks.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

import lightning as L
import torch

from dcgd.components.build import (
    CHECKPOINT_FORMAT,
    Components,
    build_components,
    component_configs,
)
from dcgd.components.latent_space import PixelSpace
from dcgd.errors import DCGDError
from dcgd.method.guidance import batch_descriptions
from dcgd.method.input import encode_conditions
from dcgd.method.loss import LossSettings, per_sample_loss
from dcgd.method.randomness import Generators, sample_generators, sample_ids
from dcgd.sampling.pipeline import DCGDPipeline, PipelineSettings, check_sampling
from dcgd.tracking.images import log_validation_grid
from dcgd.training.arguments import DCGD_MODULE_DOC
from dcgd.training.ema import EMA
from dcgd.training.encoding_cache import build_encoding_cache, cached, cached_prompts
from dcgd.training.optim import adam, check_optimisation
from dcgd.training.sample_mean import SampleMean, id_keys
from dcgd.training.speed_switches import apply_speed_switches, check_compile
from dcgd.validation import finite, whole


class DCGDModule(L.LightningModule):
    __doc__ = DCGD_MODULE_DOC  # each argument explained: dcgd.training.arguments

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
        # Settings first, before any model loads: a bad number fails in a second, not an hour.
        check_optimisation(lr, text_lr, weight_decay, ema_decay)
        self.loss_settings = LossSettings(
            layout, prompt_mode, loss, w_train, prompt_dropout, snr_gamma
        )
        check_sampling(w, val_steps, seed, steps_name="val_steps")
        whole("grid_samples", grid_samples, 0)
        finite("cache_gib", cache_gib, 0)  # 0: a cache that holds nothing (caching off)
        check_compile(compile_unet, compile_options)

        parts = build_components(
            pretrained_model, unet_config, latent_space, vae_config, text_encoder,
            text_encoder_config, layout, noise_schedule,
        )  # fmt: skip
        self.unet, self.space, self.text = parts.unet, parts.space, parts.text
        self.noise_scheduler = parts.schedule
        switches = (attention, channels_last, gradient_checkpointing)
        apply_speed_switches(self.unet, self.space, *switches)
        self.ema = EMA(self.unet, ema_decay) if ema_decay is not None else None
        self.text.requires_grad_(text_lr is not None)
        self.encoding_cache = build_encoding_cache(
            cache_encodings, self.text, text_lr is not None, cache_gib
        )
        self.val_loss_mean = SampleMean()  # means over samples, each once across all ranks
        self.val_mae_mean = SampleMean()
        self._compiled = False  # see setup
        # Side of the training images, saved in checkpoints: the resolution `remove` works at.
        self.resolution: int | None = None

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
    def per_sample_loss(self, batch: dict[str, Any], generator: Generators = None) -> torch.Tensor:
        """Eq. 7 (or the CFG objective) of each sample, ``[B]``; ``generator``: one per
        sample (what training passes, see :meth:`step_generators`) or one for the batch."""
        source, mask, space = batch["source"], batch["mask"], self.space
        # Hashing an image costs more than encoding it in pixel space: cache only VAE outputs.
        cache = None if isinstance(space, PixelSpace) else self.encoding_cache
        posterior = cached(cache, "posterior", batch["target"], space.posterior)
        latents = space.latents(posterior, sample=True, generator=generator)
        encode = lambda x: cached(cache, "latent", x, space.encode)  # noqa: E731
        conditions = encode_conditions(self.hparams.layout, source, mask, encode)
        t_info, t_mask = batch_descriptions(batch, self.hparams.prompt_mode)
        return per_sample_loss(
            self.loss_settings, self.unet, self.noise_scheduler, latents, conditions, mask,
            t_info, t_mask, self._encode_prompts, generator,
        )  # fmt: skip

    def diffusion_loss(self, batch: dict[str, Any], generator: Generators = None) -> torch.Tensor:
        return self.per_sample_loss(batch, generator).mean()

    def _encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        if self.encoding_cache is not None:  # only ever set with a frozen text encoder
            return cached_prompts(self.encoding_cache, self.text, prompts)
        with torch.set_grad_enabled(self.hparams.text_lr is not None and self.training):
            return self.text(prompts)

    def step_generators(self, batch: dict[str, Any]) -> list[torch.Generator]:
        """One generator per sample, seeded by (seed, step, sample id): the same draws on any
        number of ranks, and exact resumes with no RNG state to save."""
        where = f"step{self.global_step}"
        ids = sample_ids(batch, where, self.global_rank)
        return sample_generators(ids, self.hparams.seed, where)

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

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        groups = [{"params": list(self.unet.parameters()), "lr": hp.lr}]
        if hp.text_lr is not None:
            groups.append({"params": list(self.text.parameters()), "lr": hp.text_lr})
        return adam(groups, hp.lr, hp.weight_decay, hp.fused_optimizer)

    # ----------------------------------------------------------------- eq. 6
    def pipeline_settings(self) -> PipelineSettings:
        hp = self.hparams
        side = self.resolution or self.unet.config.sample_size * self.space.downsample
        return PipelineSettings(
            hp.layout, hp.latent_space, int(side), hp.prompt_mode, hp.w, hp.sampler,
            hp.val_steps, hp.seed,
        )  # fmt: skip

    def pipeline(self, use_ema: bool = True) -> DCGDPipeline:
        """The sampling pipeline of this module (shares its weights; EMA U-Net by default)."""
        unet = self.ema.model if (use_ema and self.ema is not None) else self.unet
        return DCGDPipeline(
            unet, self.space, self.text, self.noise_scheduler, self.pipeline_settings()
        )

    def sample(self, batch: dict[str, Any], **overrides: Any) -> torch.Tensor:
        """Remove the masked objects of a batch with eq. 6; settings default to the config."""
        t_info, t_mask = batch_descriptions(batch, self.hparams.prompt_mode)
        return self.pipeline()(
            batch["source"], batch["mask"], t_info, t_mask, ids=batch.get("id"), **overrides
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        ids = sample_ids(batch, f"val{batch_idx}", self.global_rank)
        keys = id_keys(ids, self.device)
        # Fixed noise per sample, so val/loss curves compare across steps, runs and ranks.
        losses = self.per_sample_loss(batch, sample_generators(ids, self.hparams.seed, "val"))
        self.val_loss_mean.update(losses, keys)
        self.log("val/loss", self.val_loss_mean, on_step=False, on_epoch=True)
        result = self.sample(batch)
        mae = (result - batch["target"]).abs().mean(dim=(1, 2, 3)) / 2  # on [0,1], per image
        self.val_mae_mean.update(mae, keys)
        self.log("val/mae", self.val_mae_mean, on_step=False, on_epoch=True)
        if batch_idx == 0:
            log_validation_grid(self, batch, result, self.hparams.grid_samples)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Eq. 6 on the fixed test set; ``dcgd.eval.table_callback`` scores the results."""
        return {"result": self.sample(batch)}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"id": batch.get("id"), "result": self.sample(batch)}

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What inference needs besides the weights, so a ``.ckpt`` loads with no hub, no
        directory and no training code (``DCGDPipeline.from_checkpoint``)."""
        if not hasattr(self, "_component_configs"):  # the tokenizer's files: once per run
            parts = Components(self.unet, self.space, self.text, self.noise_scheduler)
            self._component_configs = component_configs(parts)
        checkpoint["dcgd"] = {
            "format_version": CHECKPOINT_FORMAT,
            "resolution": self.resolution,
            "pipeline": asdict(self.pipeline_settings()),
            "components": self._component_configs,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.resolution = (checkpoint.get("dcgd") or {}).get("resolution")
