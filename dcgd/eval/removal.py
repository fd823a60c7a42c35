"""Removal metrics: does the removed object come back in the result?

Full-reference metrics on hole pairs cannot say it (there is no object); these score the
result against the SOURCE, which still shows the object, so they apply to paste pairs and
to real removal requests. Each scorer takes ``(source, result, mask)`` in the batch
convention (``result`` already composited) and returns ``{name: [B] tensor}``; an image
where the score is undefined (empty mask) gets NaN, which the bucketed means skip.

- ``clip@N`` (``ClipAtN``, from inst-inpaint): the source crop's top-1 CLIP class (over a
  vocabulary) is absent from the result crop's top-N classes. 1 = removed, 0 = still there;
  the mean is a success rate, HIGHER is better. Needs a real CLIP (the describer's).
- ``residue`` (``ObjectResidue``, weight-free): where do the filled pixels' colour and
  gradient statistics sit between the surrounding context and the removed object? 0 = like
  the context, 1 = like the object; LOWER is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from dcgd.errors import DataError


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
    """CLIP@N of inst-inpaint with any open_clip model (pass the describer's CLIP).

    The source and result are cropped to the same square around the mask (``margin`` of the
    box side added on each edge), resized to the model's input size and classified against
    ``vocabulary`` (prompts from ``templates``, embeddings averaged). Per image: 1.0 when the
    source's top-1 class is NOT in the result's top-N (the object is gone), else 0.0.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        vocabulary: Sequence[str],
        top_n: Sequence[int] = (1, 3, 5),
        templates: Sequence[str] = ("a photo of a {}.",),
        margin: float = 0.1,
    ) -> None:
        import open_clip

        if len(vocabulary) < 2:
            raise DataError("CLIP@N needs a vocabulary of at least two class names")
        if any(n < 1 or n > len(vocabulary) for n in top_n):
            raise DataError(f"top_n {list(top_n)} must lie in [1, {len(vocabulary)}]")
        self.model = model.eval()
        self.top_n = tuple(top_n)
        self.margin = margin
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)
        self.text = self._text_features(tokenizer, list(vocabulary), list(templates))

    @property
    def names(self) -> list[str]:
        return [f"clip@{n}" for n in self.top_n]

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _text_features(
        self, tokenizer, vocabulary: list[str], templates: list[str]
    ) -> torch.Tensor:
        prompts = [t.format(c) for c in vocabulary for t in templates]
        feats = self.model.encode_text(tokenizer(prompts).to(self._device()), normalize=True)
        feats = feats.view(len(vocabulary), len(templates), -1).mean(dim=1)
        return F.normalize(feats, dim=-1)

    def crops(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
        """Model-ready crops around each mask, and which images had a non-empty mask."""
        out, valid = [], []
        for image, m in zip(images, mask, strict=True):
            box = square_box(m, self.margin)
            valid.append(box is not None)
            top, left, h, w = box or (0, 0, *image.shape[-2:])
            crop = image[None, :, top : top + h, left : left + w]
            out.append(
                F.interpolate(
                    crop, size=self.size, mode="bicubic", antialias=True, align_corners=False
                )
            )
        x = ((torch.cat(out) + 1) / 2).clamp(0, 1)
        return (x - self.mean.to(x)) / self.std.to(x), valid

    @torch.no_grad()
    def logits(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each crop to each vocabulary class, ``[B, V]``."""
        x, _ = self.crops(images, mask)
        feats = self.model.encode_image(x.to(self._device()), normalize=True)
        return feats @ self.text.T

    @torch.no_grad()
    def __call__(
        self, source: torch.Tensor, result: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        both = torch.cat([source, result])
        logits = self.logits(both, torch.cat([mask, mask])).float().cpu()
        src, res = logits.split(source.shape[0])
        top1 = src.argmax(dim=1, keepdim=True)
        valid = torch.tensor([square_box(m, self.margin) is not None for m in mask])
        scores = {}
        for n in self.top_n:
            present = (res.topk(n, dim=1).indices == top1).any(dim=1)
            score = (~present).float()
            score[~valid] = float("nan")
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


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two ``[N, D]`` samples."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    root = np.real(root)  # numerical noise makes tiny imaginary parts
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


class ObjectResidue:
    """A weight-free removal score in ``[0,1]``, lower is better.

    With per-pixel features (Lab colour and gradient magnitude), ``R`` = the result inside
    the mask, ``C`` = the result in a ring just outside the mask (about as many pixels as the
    mask), ``A`` = the source inside the mask (the object). With ``d`` the Fréchet distance
    of Gaussians fitted to each set, ``residue = d(R,C) / (d(R,C) + d(R,A))``: 0 when the
    fill looks like its surroundings, 1 when it still looks like the object. Undefined (NaN)
    for masks under ``min_pixels``. Meaningless on hole pairs (the source holds no object).
    """

    names = ["residue"]

    def __init__(self, min_pixels: int = 16) -> None:
        self.min_pixels = min_pixels

    def score_one(self, source: np.ndarray, result: np.ndarray, mask: np.ndarray) -> float:
        """One image: ``[H,W,3]`` in [0,1] each, ``mask`` ``[H,W]`` bool."""
        inside = mask
        n_in, n_out = int(inside.sum()), int((~inside).sum())
        if n_in < self.min_pixels or n_out < self.min_pixels:
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
