"""Image–text pairs from a described batch, and the InfoNCE loss that aligns them.

Each sample gives two pairs: (masked region of ``source``, ``t_mask``) and (context of
``source``, ``t_info``), cut exactly as the describer cuts them (:mod:`dcgd.describe.regions`).
Samples whose text is empty (a hole pair has no object to name) give no pair.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dcgd.describe.regions import context_images, region_images
from dcgd.errors import DataError


def region_text_pairs(
    batch: dict[str, Any], size: int, margin: float = 0.15, fill: float = 0.0
) -> tuple[torch.Tensor, list[str]]:
    """``[N,3,size,size]`` images in [-1,1] and their N texts (N <= 2B)."""
    if "t_mask" not in batch or "t_info" not in batch:
        raise DataError(
            "the batch has no descriptions (t_mask / t_info): give the data module a describer "
            "(e.g. dcgd.describe.base.LabelDescriber for the procedural data)."
        )
    source, mask = batch["source"].float(), batch["mask"].float()
    regions = region_images(source, mask, size, margin, fill)
    contexts = context_images(source, mask, size, fill)
    images, texts = [], []
    for crops, prompts in ((regions, batch["t_mask"]), (contexts, batch["t_info"])):
        keep = [i for i, t in enumerate(prompts) if t]
        images.append(crops[keep])
        texts += [prompts[i] for i in keep]
    return torch.cat(images), texts


def info_nce(
    text_emb: torch.Tensor, image_emb: torch.Tensor, texts: list[str], logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss) where equal texts count as positives of each other.

    With a few classes, a batch holds the same text many times; treating those as
    negatives would push identical prompts apart. Targets spread over all equal texts.
    """
    text_emb = F.normalize(text_emb, dim=-1)
    image_emb = F.normalize(image_emb, dim=-1)
    logits = logit_scale * text_emb @ image_emb.T
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    labels = torch.tensor([ids[t] for t in texts], device=logits.device)
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
