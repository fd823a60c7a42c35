"""Removal metrics: does the removed object come back in the result?

Full-reference metrics on hole pairs cannot say it (there is no object); these score the
result against the SOURCE, which still shows the object, so they apply to paste pairs and
to real removal requests. Each scorer has ``names`` and takes ``(source, result, mask)`` in
the batch convention (``result`` already composited) and returns ``{name: [B] tensor}``; an
image where the score is undefined (empty mask, nothing under the mask) gets NaN, which the
bucketed means skip.

- ``clip@N`` (``ClipAtN``, from inst-inpaint): the source region's top-1 CLIP class (over a
  vocabulary) is absent from the result region's top-N classes. 1 = removed, 0 = still
  there; the mean is a success rate, HIGHER is better. It uses the describer's CLIP and the
  describer's region crop (the box around the mask, pixels outside the mask set to a
  neutral value), so look-alike objects next to the hole do not count as "still there".
  Only as good as the CLIP behind it: a CLIP that does not know the objects scores noise.
- ``residue`` (``ObjectResidue``, weight-free): where do the filled pixels' colour and
  gradient statistics sit between the surrounding context and the removed object? 0 = like
  the context, 1 = like the object; LOWER is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from dcgd.errors import ConfigError


def square_box(mask: torch.Tensor, margin: float) -> tuple[int, int, int, int] | None:
    """``(top, left, side_h, side_w)`` of a square around the mask's bounding box, widened by
    ``margin`` of its side on each edge and clamped inside the image; None for an empty mask."""
    ys, xs = torch.nonzero(mask.reshape(mask.shape[-2:]) > 0.5, as_tuple=True)
    if ys.numel() == 0:
        return None
    height, width = mask.shape[-2:]
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = min(round(max(y1 - y0, x1 - x0) * (1 + 2 * margin)), height, width)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    top = min(max(cy - side // 2, 0), height - side)
    left = min(max(cx - side // 2, 0), width - side)
    return top, left, side, side


class ClipAtN:
    """CLIP@N of inst-inpaint with an open_clip model (``dcgd.describe.clip_model.LoadedClip``).

    Source and result are cut exactly as the describer cuts the masked region
    (``dcgd.describe.regions.region_images``: a square box around the mask grown by ``margin``,
    pixels outside the mask set to ``fill``) and ranked against ``vocabulary`` (each name
    the mean embedding of its ``templates``, CLIP's zero-shot recipe). Per image: 1.0 when
    the source's top-1 class is NOT among the result's top-N (the object is gone), 0.0 when
    it is; NaN when the mask is empty or the source shows nothing under it (a hole pair).

    A vocabulary of object names only forces a well-filled region onto SOME object; add
    background names (``from_describer`` adds the describer's scene names) so that a good
    fill has somewhere to go.
    """

    def __init__(
        self,
        clip: Any,
        vocabulary: Sequence[str],
        top_n: Sequence[int] = (1, 3, 5),
        templates: Sequence[str] = ("a photo of a {}.",),
        margin: float = 0.15,
        fill: float = 0.0,
    ) -> None:
        from dcgd.describe.clip_describer import encode_names

        vocabulary = list(dict.fromkeys(vocabulary))  # a repeated name would count twice
        if len(vocabulary) < 2:
            raise ConfigError("CLIP@N needs a vocabulary of at least two class names")
        if not top_n or any(n < 1 or n > len(vocabulary) for n in top_n):
            raise ConfigError(
                f"CLIP@N top_n {list(top_n)} must lie in [1, {len(vocabulary)}] (the vocabulary)"
            )
        if not templates or any("{}" not in t for t in templates):
            raise ConfigError(f"CLIP@N templates must each contain '{{}}', got {list(templates)}")
        self.clip = clip
        self.vocabulary = vocabulary
        self.top_n = tuple(sorted(set(top_n)))
        self.margin, self.fill = margin, fill
        clip.model.eval()
        self.text = encode_names(clip, vocabulary, list(templates))  # [V, D] unit vectors

    @classmethod
    def from_describer(
        cls, describer: Any, top_n: Sequence[int] = (1, 3, 5), include_scenes: bool = True
    ) -> ClipAtN:
        """CLIP@N with a ``ClipRegionDescriber``'s CLIP, vocabularies, templates and crop."""
        vocabulary = list(describer.objects) + (list(describer.scenes) if include_scenes else [])
        return cls(
            describer.clip,
            vocabulary,
            top_n,
            describer.templates,
            margin=describer.margin,
            fill=describer.fill,
        )

    @property
    def names(self) -> list[str]:
        return [f"clip@{n}" for n in self.top_n]

    @property
    def protocol(self) -> str:
        identity = getattr(self.clip, "identity", {}) or {}
        clip = {k: v for k, v in identity.items() if k != "model_cfg"}  # the config is long
        return (
            f"CLIP@N (inst-inpaint): 1 if the source region's top-1 class is not in the result "
            f"region's top-N, over {len(self.vocabulary)} names; describer's crop (margin "
            f"{self.margin}, outside-mask fill {self.fill}); CLIP {clip}; "
            "paste pairs only; higher is better"
        )

    def to(self, device: torch.device | str) -> ClipAtN:
        self.clip.model.to(device)
        self.text = self.text.to(device)
        return self

    @torch.no_grad()
    def similarities(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each image's masked region to each class, ``[B, V]``."""
        from dcgd.describe.clip_describer import encode_images
        from dcgd.describe.regions import region_images

        crops = region_images(
            images.float(), mask.float(), self.clip.image_size, self.margin, self.fill
        )
        return encode_images(self.clip, crops) @ self.text.to(crops.device).T

    @torch.no_grad()
    def __call__(
        self, source: torch.Tensor, result: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        from dcgd.describe.regions import region_has_content

        sims = self.similarities(torch.cat([source, result]), torch.cat([mask, mask]))
        src, res = sims.float().cpu().split(source.shape[0])
        top1 = src.argmax(dim=1, keepdim=True)
        defined = region_has_content(source.float(), mask.float()).cpu()
        scores = {}
        for n in self.top_n:
            present = (res.topk(n, dim=1).indices == top1).any(dim=1)
            score = (~present).float()
            score[~defined] = float("nan")
            scores[f"clip@{n}"] = score
        return scores


def _features(image: np.ndarray) -> np.ndarray:
    """Per-pixel colour (CIE Lab) and gradient magnitude of an ``[H,W,3]`` [0,1] image,
    scaled to comparable ranges, as ``[H,W,4]``."""
    lab = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2Lab)
    gx = cv2.Sobel(lab[..., 0], cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab[..., 0], cv2.CV_32F, 0, 1, ksize=3)
    grad = np.sqrt(gx * gx + gy * gy) / 8.0  # Sobel sums 8 pixel differences
    return np.dstack([lab[..., 0], lab[..., 1], lab[..., 2], grad]).astype(np.float64) / 100.0


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two ``[N, D]`` samples.

    ``tr((Σa Σb)^½)`` is computed as ``Σ √eig(√Σa Σb √Σa)`` (a symmetric matrix with the same
    eigenvalues), which stays real and finite for the singular covariances of flat regions;
    ``eps`` on the diagonals keeps near-constant samples well conditioned.
    """
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    eye = np.eye(a.shape[1]) * eps
    cov_a = np.atleast_2d(np.cov(a, rowvar=False)) + eye
    cov_b = np.atleast_2d(np.cov(b, rowvar=False)) + eye
    root_a = _sqrt_psd(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


class ObjectResidue:
    """A weight-free removal score in ``[0,1]``, lower is better.

    With per-pixel features (CIE Lab colour and the gradient magnitude of L), ``R`` = the
    result inside the mask, ``C`` = the result in a ring just outside the mask (about as many
    pixels as the mask), ``A`` = the source inside the mask (the object). With ``d`` the
    Fréchet distance of Gaussians fitted to each set,
    ``residue = d(R,C) / (d(R,C) + d(R,A))``: 0 when the fill looks like its surroundings,
    1 when it still looks like the object (a method that returns the source scores 1).

    What it does not see: it compares colour / texture statistics, it does not recognise
    objects. An object whose colours match the background escapes it, and a fill that copies
    a look-alike lying in the ring counts as context. Use it next to CLIP@N, not instead.
    NaN for masks under ``min_pixels`` and where the source is flat under the mask (a hole
    pair: no object to come back).
    """

    names = ["residue"]
    protocol = (
        "d(fill, ring) / (d(fill, ring) + d(fill, object)), d = Fréchet distance of Lab colour "
        "+ gradient statistics; ring = as many pixels just outside the mask; paste pairs "
        "only; 0 = like the context, 1 = like the object; lower is better"
    )

    def __init__(self, min_pixels: int = 16) -> None:
        self.min_pixels = min_pixels

    def score_one(self, source: np.ndarray, result: np.ndarray, mask: np.ndarray) -> float:
        """One image: ``[H,W,3]`` in [0,1] each, ``mask`` ``[H,W]`` bool."""
        inside = mask
        n_in, n_out = int(inside.sum()), int((~inside).sum())
        if n_in < self.min_pixels or n_out < self.min_pixels:
            return float("nan")
        if np.ptp(source[inside], axis=0).max() < 1e-3:  # nothing under the mask
            return float("nan")
        # Distance of every outside pixel to the mask; the ring is the n_in nearest ones.
        dist = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 3)
        outside_d = dist[~inside]
        radius = np.partition(outside_d, min(n_in, n_out) - 1)[min(n_in, n_out) - 1]
        ring = ~inside & (dist <= radius)
        f_res, f_src = _features(result), _features(source)
        r, c, a = f_res[inside], f_res[ring], f_src[inside]
        d_context = max(frechet_distance(r, c), 0.0)  # rounding can dip below zero
        d_object = max(frechet_distance(r, a), 0.0)
        total = d_context + d_object
        return 0.5 if total <= 1e-12 else d_context / total

    def __call__(
        self, source: torch.Tensor, result: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        src = ((source.detach().float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        res = ((result.detach().float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        m = (mask.detach().cpu()[:, 0] > 0.5).numpy()
        return {
            "residue": torch.tensor(
                [self.score_one(s, r, k) for s, r, k in zip(src, res, m, strict=True)]
            )
        }
