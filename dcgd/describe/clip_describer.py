"""``ClipRegionDescriber``: T_mask and T_info by zero-shot CLIP ranking (DESIGN.md §1).

CLIP does not write text; it scores text against images. So:

- ``T_mask`` (negative prompt): the masked region of ``source`` (a square box around the
  mask with a margin, pixels outside the mask set to grey) ranked against an object
  vocabulary; the top names above a score threshold.
- ``T_info`` (positive prompt): the context (``source`` with the hole set to grey) ranked
  against scene names (Places365 by default), plus the top objects seen in the context.

Each name is embedded as the mean of its prompt templates (CLIP's zero-shot recipe). Scores
are CLIP's softmax probabilities over the vocabulary. Works batched on the batch's device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dcgd.describe.base import Describer, Description
from dcgd.describe.clip_model import LoadedClip, check_clip_source, load_clip
from dcgd.describe.regions import clip_normalize, context_images, region_has_content, region_images
from dcgd.describe.vocabulary import read_templates, read_vocabulary, text_digest
from dcgd.errors import ConfigError

# Candidates kept in ``Description.scores`` for logging, whatever the top-k.
LOGGED_CANDIDATES = 5


@torch.no_grad()
def encode_names(
    clip: LoadedClip, names: list[str], templates: list[str], chunk: int = 256
) -> torch.Tensor:
    """``[N, D]`` unit vectors: each name's mean template embedding (CLIP zero-shot)."""
    device = next(clip.model.parameters()).device
    texts = [t.format(name) for name in names for t in templates]
    parts = []
    for start in range(0, len(texts), chunk):
        ids = clip.tokenize(texts[start : start + chunk]).to(device)
        parts.append(F.normalize(clip.model.encode_text(ids).float(), dim=-1))
    per_name = torch.cat(parts).view(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(per_name, dim=-1)


@torch.no_grad()
def encode_images(clip: LoadedClip, images: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``[B, D]`` unit vectors for ``[B,3,S,S]`` images in [-1,1]."""
    device = next(clip.model.parameters()).device
    parts = []
    for start in range(0, len(images), chunk):
        x = clip_normalize(images[start : start + chunk].to(device).float(), clip.mean, clip.std)
        parts.append(F.normalize(clip.model.encode_image(x).float(), dim=-1))
    return torch.cat(parts)


def _ranked(probs: torch.Tensor, names: list[str], count: int) -> list[list[Any]]:
    values, indices = probs.topk(min(count, len(names)))
    return [
        [names[i], round(float(v), 6)]
        for v, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


class ClipRegionDescriber(Describer):
    """Describe the masked region and its context by ranking vocabularies with open_clip.

    Args:
        clip_model: an open_clip model name (``ViT-B-32``) or a directory saved by
            ``dcgd.describe.clip_model.save_clip``. Exclusive with ``clip_model_cfg``.
        clip_pretrained: a pretrained tag of ``clip_model`` or a checkpoint file.
        clip_model_cfg: build a (tiny) open_clip model from this config (tests only).
        object_vocabulary / scene_vocabulary / templates: text files (path, or a name in
            ``dcgd/assets``).
        mask_top_k / scene_top_k / context_top_k: how many names each part of the prompts
            takes; ``min_score``: names below this probability are dropped.
        mask_template / info_template / info_template_no_objects: the final phrasing, with
            ``{objects}`` (names joined by ``joiner``) and ``{scene}``.
        exclude_mask_objects: keep the object to remove out of the positive prompt.
        margin: box margin around the mask (fraction of its size); fill: the neutral value
            (in [-1,1]) for pixels outside the region / inside the hole.
    """

    def __init__(
        self,
        clip_model: str | None = None,
        clip_pretrained: str | None = None,
        clip_model_cfg: dict[str, Any] | None = None,
        object_vocabulary: str = "imagenet_classes.txt",
        scene_vocabulary: str = "categories_places365.txt",
        templates: str = "simple_templates.txt",
        mask_top_k: int = 1,
        scene_top_k: int = 1,
        context_top_k: int = 2,
        min_score: float = 0.0,
        mask_template: str = "{objects}",
        info_template: str = "{scene} with {objects}",
        info_template_no_objects: str = "{scene}",
        joiner: str = " and ",
        exclude_mask_objects: bool = True,
        margin: float = 0.15,
        fill: float = 0.0,
        image_chunk: int = 64,
    ) -> None:
        if min(mask_top_k, scene_top_k) < 1 or context_top_k < 0:
            raise ConfigError("mask_top_k and scene_top_k must be >= 1, context_top_k >= 0.")
        if not 0.0 <= min_score < 1.0:
            raise ConfigError(f"min_score is a probability in [0, 1); got {min_score}.")
        for name, template, keys in (
            ("mask_template", mask_template, ("{objects}",)),
            ("info_template", info_template, ("{scene}", "{objects}")),
            ("info_template_no_objects", info_template_no_objects, ("{scene}",)),
        ):
            if not all(k in template for k in keys):
                raise ConfigError(f"{name} {template!r} must contain {' and '.join(keys)}.")
        # Read the files now: a missing vocabulary fails at construction, not mid-training.
        self.objects = read_vocabulary(object_vocabulary, "object vocabulary")
        self.scenes = read_vocabulary(scene_vocabulary, "scene vocabulary")
        self.templates = read_templates(templates)
        self.clip_source = {
            "model": clip_model,
            "pretrained": clip_pretrained,
            "model_cfg": clip_model_cfg,
        }
        if (clip_model is None) == (clip_model_cfg is None):
            raise ConfigError("give the describer exactly one of clip_model and clip_model_cfg.")
        # An unknown model name or a missing directory fails now, not at the first batch.
        check_clip_source(clip_model, clip_pretrained, clip_model_cfg)
        self.mask_top_k, self.scene_top_k, self.context_top_k = (
            mask_top_k,
            scene_top_k,
            context_top_k,
        )
        self.min_score = min_score
        self.mask_template = mask_template
        self.info_template = info_template
        self.info_template_no_objects = info_template_no_objects
        self.joiner = joiner
        self.exclude_mask_objects = exclude_mask_objects
        self.margin, self.fill = margin, fill
        self.image_chunk = image_chunk
        self._clip: LoadedClip | None = None
        self._names: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> embeddings

    @property
    def clip(self) -> LoadedClip:
        if self._clip is None:
            self._clip = load_clip(**self.clip_source)
        return self._clip

    def settings(self) -> dict[str, Any]:
        return {
            "kind": "clip_region",
            "clip": self.clip.identity,
            "objects": text_digest(self.objects),
            "scenes": text_digest(self.scenes),
            "templates": text_digest(self.templates),
            "top_k": [self.mask_top_k, self.scene_top_k, self.context_top_k],
            "min_score": self.min_score,
            "phrasing": [
                self.mask_template,
                self.info_template,
                self.info_template_no_objects,
                self.joiner,
            ],
            "exclude_mask_objects": self.exclude_mask_objects,
            "margin": self.margin,
            "fill": self.fill,
        }

    def _name_embeddings(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._names:
            self.clip.model.to(device)
            self._names[key] = (
                encode_names(self.clip, self.objects, self.templates),
                encode_names(self.clip, self.scenes, self.templates),
            )
        return self._names[key]

    def _pick(self, ranked: list[list[Any]], k: int, exclude: set[str] = frozenset()) -> list[str]:
        kept = [name for name, p in ranked if p >= self.min_score and name not in exclude]
        return kept[:k]

    @torch.no_grad()
    def describe(self, batch: dict[str, Any]) -> list[Description]:
        source, mask = batch["source"], batch["mask"]
        device = source.device
        objects_emb, scenes_emb = self._name_embeddings(device)
        size = self.clip.image_size
        regions = region_images(source.float(), mask.float(), size, self.margin, self.fill)
        contexts = context_images(source.float(), mask.float(), size, self.fill)
        scale = self.clip.model.logit_scale.exp().float()
        region_emb = encode_images(self.clip, regions, self.image_chunk)
        context_emb = encode_images(self.clip, contexts, self.image_chunk)
        p_region = (scale * region_emb @ objects_emb.T).softmax(-1).cpu()
        p_context = (scale * context_emb @ objects_emb.T).softmax(-1).cpu()
        p_scene = (scale * context_emb @ scenes_emb.T).softmax(-1).cpu()
        has_object = region_has_content(source.float(), mask.float()).tolist()

        shown = max(LOGGED_CANDIDATES, self.mask_top_k, self.context_top_k + self.mask_top_k)
        descriptions = []
        for i in range(len(source)):
            mask_ranked = _ranked(p_region[i], self.objects, shown) if has_object[i] else []
            scene_ranked = _ranked(
                p_scene[i], self.scenes, max(LOGGED_CANDIDATES, self.scene_top_k)
            )
            context_ranked = _ranked(p_context[i], self.objects, shown)
            mask_names = self._pick(mask_ranked, self.mask_top_k)
            exclude = set(mask_names) if self.exclude_mask_objects else set()
            context_names = self._pick(context_ranked, self.context_top_k, exclude)
            scene = self.joiner.join(self._pick(scene_ranked, self.scene_top_k))
            t_mask = (
                self.mask_template.format(objects=self.joiner.join(mask_names))
                if mask_names
                else ""
            )
            if context_names:
                t_info = self.info_template.format(
                    scene=scene, objects=self.joiner.join(context_names)
                )
            else:
                t_info = self.info_template_no_objects.format(scene=scene)
            descriptions.append(
                Description(
                    t_info=t_info.strip(),
                    t_mask=t_mask.strip(),
                    scores={"mask": mask_ranked, "scene": scene_ranked, "context": context_ranked},
                )
            )
        return descriptions


def load_region_describer(model: str, pretrained: str | None = None) -> ClipRegionDescriber:
    """The describer of ``--describer MODEL --describer-pretrained TAG``, loaded now: a wrong
    model name fails before any image is processed or any server starts."""
    describer = ClipRegionDescriber(clip_model=model, clip_pretrained=pretrained)
    _ = describer.clip
    return describer
