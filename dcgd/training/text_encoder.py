"""``TextEncoderModule``: align the U-Net's text encoder τθ with CLIP's image space.

Stage (a) of DESIGN.md §1 "Fine-tuning the text encoder": InfoNCE between τθ(T_mask) /
τθ(T_info) (pooled, through a learnable projection when the widths differ) and the FROZEN
CLIP image embeddings of the matching regions (masked region crop / context), cut by the
describer's own code. The result is saved with ``TextConditioner.save_pretrained`` so the
DCGD module loads it as its text encoder (``TextConditioner.from_pretrained(dir)``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from dcgd.components.text_encoder import TextConditioner
from dcgd.describe.clip_describer import encode_images
from dcgd.describe.clip_model import LoadedClip, load_clip
from dcgd.describe.clip_training import ContrastiveModule
from dcgd.describe.contrastive import info_nce, region_text_pairs
from dcgd.errors import ConfigError
from dcgd.training.open_clip_text import text_conditioner_from_open_clip


def build_text_conditioner(text_encoder: str | dict[str, Any]) -> TextConditioner:
    """``"tiny"`` or a dict of ``TextConditioner.tiny`` args; else a path / hub id to load."""
    if text_encoder == "tiny":
        return TextConditioner.tiny()
    if isinstance(text_encoder, dict):
        return TextConditioner.tiny(**text_encoder)
    return TextConditioner.from_pretrained(text_encoder)


def set_trainable(text: TextConditioner, layers: int | Literal["all"], embeddings: bool) -> None:
    """Freeze τθ, then unfreeze the last ``layers`` transformer blocks and the final norm."""
    # transformers 5 flattened CLIPTextModel; 4.x nests it under .text_model.
    text_model = getattr(text.model, "text_model", text.model)
    if layers == "all":
        text.requires_grad_(True)
        if not embeddings:
            text_model.embeddings.requires_grad_(False)
        return
    blocks = text_model.encoder.layers
    if not isinstance(layers, int) or not 0 <= layers <= len(blocks):
        raise ConfigError(f"trainable_layers must be 'all' or 0..{len(blocks)}; got {layers!r}.")
    text.requires_grad_(False)
    for block in blocks[len(blocks) - layers :]:
        block.requires_grad_(True)
    text_model.final_layer_norm.requires_grad_(True)
    text_model.embeddings.requires_grad_(embeddings)


class TextEncoderModule(ContrastiveModule):
    """Fine-tune a ``TextConditioner`` against frozen open_clip image embeddings.

    Args:
        text_encoder: τθ to fine-tune: ``"clip"`` (the text tower of the CLIP below, converted
            to a ``CLIPTextModel``; the projection starts as CLIP's own, so training starts
            aligned), a Stable Diffusion repo / directory (``text_encoder/`` + ``tokenizer/``),
            ``"tiny"`` (random), or a dict of ``TextConditioner.tiny`` args.
        clip_model / clip_pretrained / clip_model_cfg: the describer's open_clip model whose
            image tower gives the targets (see ``dcgd.describe.clip_model.load_clip``).
        trainable_layers: ``"all"`` or how many of the last transformer blocks train (the
            final layer norm and the projection always train).
        train_embeddings: also train token / position embeddings.
        projection: map τθ's pooled width to CLIP's embedding width; ``None`` = only when they
            differ (always with ``text_encoder: clip``, initialised from CLIP's projection).
        init_temperature: starting InfoNCE temperature (learnt); ``None``: CLIP's own with
            ``text_encoder: clip``, else 0.07.
        lr / projection_lr / weight_decay: AdamW settings (the projection is new, so it
            usually wants a larger rate).
        save_dir: where ``on_train_end`` writes the encoder (default
            ``<default_root_dir>/text_encoder``).
    """

    SAVE_FOLDER = "text_encoder"
    SAVED = "fine-tuned text encoder saved to {path} (load: TextConditioner.from_pretrained)"

    def __init__(
        self,
        text_encoder: str | dict[str, Any] = "tiny",
        clip_model: str | None = None,
        clip_pretrained: str | None = None,
        clip_model_cfg: dict[str, Any] | None = None,
        trainable_layers: int | Literal["all"] = "all",
        train_embeddings: bool = False,
        projection: bool | None = None,
        lr: float = 1e-4,
        projection_lr: float = 1e-3,
        weight_decay: float = 0.0,
        init_temperature: float | None = None,
        margin: float = 0.15,
        fill: float = 0.0,
        save_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if clip_model is None and clip_model_cfg is None:
            raise ConfigError(
                "TextEncoderModule needs the CLIP whose frozen image embeddings are the targets: "
                "set clip_model (an open_clip name with clip_pretrained, or the directory "
                "experiments/clip_procedural.yaml saves) or clip_model_cfg."
            )
        # Frozen and rebuilt from its source: kept out of the module's parameters/checkpoint.
        self._clip = [load_clip(clip_model, clip_pretrained, clip_model_cfg)]
        self.clip.model.requires_grad_(False)
        embed_dim = self._clip_embed_dim()
        clip_projection = None
        if text_encoder == "clip":
            self.text, clip_projection = text_conditioner_from_open_clip(self.clip)
        else:
            self.text = build_text_conditioner(text_encoder)
        width = self.text.hidden_size
        need = (
            projection
            if projection is not None
            else (clip_projection is not None or width != embed_dim)
        )
        if not need and width != embed_dim:
            raise ConfigError(
                f"projection=False needs equal widths; τθ has {width}, CLIP embeds in {embed_dim}."
            )
        self.projection = nn.Linear(width, embed_dim, bias=False) if need else nn.Identity()
        if need and clip_projection is not None:
            with torch.no_grad():
                self.projection.weight.copy_(clip_projection.T)
        if init_temperature is None and clip_projection is not None:
            scale = float(self.clip.model.logit_scale.detach())  # CLIP's own, already log
        else:
            scale = math.log(1 / (init_temperature or 0.07))
        self.logit_scale = nn.Parameter(torch.tensor(scale))
        set_trainable(self.text, trainable_layers, train_embeddings)
        self.text.train()  # from_pretrained returns eval mode; Lightning keeps modes as found

    @property
    def clip(self) -> LoadedClip:
        return self._clip[0]

    def _clip_embed_dim(self) -> int:
        with torch.no_grad():
            size = self.clip.image_size
            return int(self.clip.model.encode_image(torch.zeros(1, 3, size, size)).shape[-1])

    def contrastive_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        images, texts = region_text_pairs(
            batch, self.clip.image_size, self.hparams.margin, self.hparams.fill
        )
        self.clip.model.to(self.device).eval()
        image_emb = encode_images(self.clip, images)
        text_emb = self.projection(self.text.pooled(texts))
        return info_nce(text_emb, image_emb, texts, self.logit_scale.exp().clamp(max=100))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        text_params = [p for p in self.text.parameters() if p.requires_grad]
        head_params = [p for p in self.projection.parameters()] + [self.logit_scale]
        return torch.optim.AdamW(
            [
                {"params": text_params, "lr": self.hparams.lr},
                {"params": head_params, "lr": self.hparams.projection_lr},
            ],
            weight_decay=self.hparams.weight_decay,
        )

    def save_model(self, directory: str | Path) -> Path:
        """Write τθ as ``text_encoder/`` + ``tokenizer/`` (``TextConditioner.from_pretrained``)."""
        directory = Path(directory)
        self.text.save_pretrained(directory)
        return directory
