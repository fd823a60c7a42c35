"""``ClipTrainingModule``: plain CLIP contrastive training of both open_clip towers.

The image–text pairs are the ones the describer looks at: (masked region, ``t_mask``) and
(context, ``t_info``), the texts coming from the data module's describer. On the built-in
procedural data with ``LabelDescriber`` this trains a tiny CLIP that knows the procedural
objects and scenes without any download (``experiments/clip_procedural.yaml``); the saved
directory is what ``ClipRegionDescriber(clip_model=<dir>)`` loads. From a pretrained
open_clip model it fine-tunes both towers on your own labelled data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from dcgd.describe.clip_model import load_clip, save_clip, tiny_clip_config
from dcgd.describe.contrastive import info_nce, region_text_pairs
from dcgd.describe.regions import clip_normalize


class ContrastiveModule(L.LightningModule):
    """A module trained by its ``contrastive_loss`` of a batch, logged as ``train/loss`` and
    ``val/loss`` (``ClipTrainingModule`` here, ``dcgd.training.text_encoder``'s τθ). At the end
    of training rank 0 writes it with ``save_model`` to ``hparams.save_dir`` (default
    ``<default_root_dir>/<SAVE_FOLDER>``) and prints ``SAVED`` (``{path}``: where)."""

    SAVE_FOLDER = "model"
    SAVED = "model saved to {path}"

    def contrastive_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def save_model(self, directory: str | Path) -> Path:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.contrastive_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["source"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.contrastive_loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["source"]), sync_dist=True)
        return loss

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        folder = self.hparams.save_dir or Path(self.trainer.default_root_dir) / self.SAVE_FOLDER
        print(self.SAVED.format(path=self.save_model(folder)))


class ClipTrainingModule(ContrastiveModule):
    """Train an open_clip model (both towers) with CLIP's loss on described regions.

    Args:
        clip_model / clip_pretrained / clip_model_cfg: the starting model (see
            ``dcgd.describe.clip_model.load_clip``); default a tiny CLIP from a config.
        lr / weight_decay / warmup_steps: AdamW with linear warm-up.
        margin / fill: region cutting, as in the describer.
        save_dir: where ``on_train_end`` writes the model (default ``<default_root_dir>/clip``).
    """

    SAVE_FOLDER = "clip"
    SAVED = "CLIP model saved to {path} (describer: clip_model: {path})"

    def __init__(
        self,
        clip_model: str | None = None,
        clip_pretrained: str | None = None,
        clip_model_cfg: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 20,
        margin: float = 0.15,
        fill: float = 0.0,
        seed: int = 0,
        save_dir: str | None = None,
    ) -> None:
        super().__init__()
        if clip_model is None and clip_model_cfg is None:
            clip_model_cfg = tiny_clip_config()
        self.save_hyperparameters()
        loaded = load_clip(clip_model, clip_pretrained, clip_model_cfg, seed=seed)
        self.model = loaded.model.train()
        self.model_cfg = loaded.model_cfg
        self.tokenizer = loaded.tokenizer
        self.image_size, self.mean, self.std = loaded.image_size, loaded.mean, loaded.std

    def contrastive_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        images, texts = region_text_pairs(
            batch, self.image_size, self.hparams.margin, self.hparams.fill
        )
        image_emb = self.model.encode_image(clip_normalize(images, self.mean, self.std))
        text_emb = self.model.encode_text(self.tokenizer(texts).to(self.device))
        scale = self.model.logit_scale.exp().clamp(max=100)
        return info_nce(F.normalize(text_emb, dim=-1), F.normalize(image_emb, dim=-1), texts, scale)

    def configure_optimizers(self) -> dict[str, Any]:
        # No weight decay on gains, biases, embeddings and the temperature (CLIP's recipe).
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            flat = param.ndim < 2 or "embedding" in name or "logit_scale" in name
            (no_decay if flat else decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        warmup = max(1, self.hparams.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def save_model(self, directory: str | Path) -> Path:
        """Write the open_clip directory that ``load_clip`` / the describer load."""
        return save_clip(self.model, self.model_cfg, directory)
