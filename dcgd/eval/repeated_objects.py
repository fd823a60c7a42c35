"""The repeated-object removal benchmark: built-in cases and a judge that knows the objects.

The paper's Fig. 7 claim is that dual prompts stop the model from drawing the removed object
back when look-alikes surround it. This module makes that a number.

**Cases.** Case ``i`` of seed ``s`` is drawn from ``numpy.random.default_rng([s, i])``: a
procedural scene (``dcgd.data.procedural.render_scene``: a textured background with 2-5
objects of one class) and one more object of the SAME class, pasted with
``dcgd.data.pairs.paste_object`` where its mask overlaps none of the others when a place
exists (``PLACEMENT_TRIES`` random places, else the least overlapping one). Object sides
cycle through ``SIZES`` (``i % 3``). The mask is the object's footprint dilated by
``dilation`` pixels; ``t_mask`` is its class, ``t_info`` the scene's label of what the mask
leaves visible (``Scene.label``). Same seed, same bytes on every machine.

**Judge** (independent of the model and of any CLIP). The classes are known exactly
(``OBJECT_CLASSES``: an RGB colour, rendered with a shade factor of about 0.75-1.15). A pixel
*looks like class k* when its RGB value (0..255) lies within ``COLOUR_TOLERANCE`` (Euclidean)
of some shade ``clip(s * colour_k, 0, 255)``, ``s`` in ``SHADES`` (0.7..1.2, sampled every
0.02). ``p`` is the fraction of the object's opaque footprint (alpha > 0.5) that looks like
the class: ``p_src`` in the source, ``p_clean`` in the clean target, ``p_res`` in a result.
The object **reappeared** when ``p_res >= p_clean + 0.5 * (p_src - p_clean)``.

A case is kept only when the judge can decide it: ``p_src - max(p_clean, p_ring) >=
MIN_CONTRAST`` (0.5), ``p_ring`` being the same fraction over the context ring within half an
object side of the mask (the look-alikes excluded). So neither the background under the
object nor the one around the hole looks like the class (a white heart over white clouds or
between light floor tiles is redrawn): a fill that continues the context cannot score as a
reappearance, while one that copies a neighbouring look-alike does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from dcgd.data.pairs import paste_object
from dcgd.data.procedural import OBJECT_CLASSES, Scene, render_object, render_scene
from dcgd.errors import ConfigError
from dcgd.eval.metrics import ssim
from dcgd.method.input import composite

# size name -> side of the pasted object as a fraction of the image side
SIZES: dict[str, float] = {"small": 0.14, "medium": 0.20, "large": 0.26}
SHADES = np.linspace(0.7, 1.2, 26)  # the renderer uses about 0.75..1.15
COLOUR_TOLERANCE = 32.0  # RGB distance on 0..255
MIN_CONTRAST = 0.5  # p_src - max(p_clean, p_ring) of a kept case
REAPPEAR_FRACTION = 0.5  # of the way from p_clean to p_src
DILATION = 3
PLACEMENT_TRIES = 50
MAX_DRAWS = 200
PSNR_CAP = 100.0  # dB, for a hole filled exactly (MSE 0)

MEASURES = ("reappeared", "hole_mae", "hole_psnr", "ssim")

PROTOCOL: dict[str, str] = {
    "cases": "procedural scene (2-5 look-alikes) + one more object of the same class pasted "
    "without overlap when possible; rng numpy default_rng([case_seed, index]); object side "
    + ", ".join(f"{k} {v:g}" for k, v in SIZES.items())
    + " of the image side (cycled); mask = footprint (alpha>0) dilated",
    "judge": f"pixel looks like class k when within {COLOUR_TOLERANCE:g} (RGB 0..255, "
    f"Euclidean) of clip(s*colour_k), s in [{SHADES[0]:g}, {SHADES[-1]:g}]; p = fraction of "
    "the opaque footprint (alpha>0.5) that does; reappeared when p_res >= p_clean + "
    f"{REAPPEAR_FRACTION:g}*(p_src - p_clean); cases kept when p_src - max(p_clean, p_ring) "
    f">= {MIN_CONTRAST:g}",
    "reappeared": "rate of cases judged reappeared (lower is better)",
    "hole_mae": "mean |result - target| on [0,1] over mask pixels and channels",
    "hole_psnr": f"10*log10(1/MSE) over mask pixels and channels on [0,1], capped at "
    f"{PSNR_CAP:g} dB",
    "ssim": "dcgd.eval.metrics.ssim (Gaussian 11, sigma 1.5, valid region) on the WHOLE "
    "composited image, so differences are diluted by the unchanged context",
    "lpips": "lpips v0.1 on the whole composited image vs target, inputs in [-1,1]",
    "composite": "result = mask * pred + (1 - mask) * source, pred clamped to [-1,1]",
    "intervals": "bootstrap 95% (percentile) over cases, seeded; differences are paired "
    "(same cases, same resamples)",
}


@dataclass(frozen=True, eq=False)
class Case:
    """One removal request with its ground truth; images ``uint8 [H,W,3]``, masks ``[H,W]``."""

    id: str
    source: np.ndarray
    target: np.ndarray
    mask: np.ndarray  # uint8 {0,1}: the dilated footprint
    footprint: np.ndarray  # bool: the object's opaque pixels (alpha > 0.5)
    lookalikes: np.ndarray  # bool: the pixels the scene's other objects touch
    label: str
    scene: str
    t_info: str
    t_mask: str
    size_name: str
    p_src: float
    p_clean: float

    @property
    def threshold(self) -> float:
        """``p_res`` at or above this means the object reappeared."""
        return self.p_clean + REAPPEAR_FRACTION * (self.p_src - self.p_clean)

    def judge(self, result: np.ndarray) -> tuple[float, bool]:
        """``(p_res, reappeared)`` of a result image (``[H,W,3]`` on 0..255)."""
        p_res = footprint_fraction(result, self.footprint, self.label)
        return p_res, p_res >= self.threshold


def looks_like(image: np.ndarray, label: str) -> np.ndarray:
    """Bool ``[H,W]``: which pixels of ``image`` (``[H,W,3]``, 0..255) look like ``label``."""
    colour = np.asarray(OBJECT_CLASSES[label][0], np.float32)
    shades = np.clip(SHADES[:, None].astype(np.float32) * colour, 0, 255)  # [S,3]
    pixels = np.asarray(image, np.float32)[..., None, :]  # [H,W,1,3]
    distance = np.sqrt(((pixels - shades) ** 2).sum(-1)).min(-1)
    return distance <= COLOUR_TOLERANCE


def footprint_fraction(image: np.ndarray, region: np.ndarray, label: str) -> float:
    """Fraction of ``region`` (bool ``[H,W]``) whose pixels look like ``label``; 0 if empty."""
    if not region.any():
        return 0.0
    return float(looks_like(image, label)[region].mean())


def _occupied(scene: Scene, size: int) -> np.ndarray:
    """Bool ``[H,W]``: the pixels the scene's objects touch."""
    taken = np.zeros((size, size), bool)
    for obj in scene.objects:
        h, w = obj.alpha.shape
        taken[obj.y : obj.y + h, obj.x : obj.x + w] |= obj.alpha > 0
    return taken


def _paste_apart(scene: Scene, rgba: np.ndarray, rng: np.random.Generator, dilation: int):
    """Paste where the mask overlaps no other object if such a place turns up; else the least
    overlapping place tried. ``(source, mask, x, y)``."""
    size = scene.image.shape[0]
    side = rgba.shape[0]
    taken = _occupied(scene, size)
    best = None
    for _ in range(PLACEMENT_TRIES):
        x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        source, mask = paste_object(scene.image, rgba, x, y, dilation)
        overlap = int(np.count_nonzero(taken & (mask > 0)))
        if best is None or overlap < best[0]:
            best = (overlap, source, mask, x, y)
        if overlap == 0:
            break
    return best[1:]


def _ring(mask: np.ndarray, taken: np.ndarray, width: int) -> np.ndarray:
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return (cv2.dilate(mask, kernel) > 0) & (mask == 0) & ~taken


def build_case(
    seed: int, index: int, size: int = 64, dilation: int = DILATION, sizes: Mapping = SIZES
) -> Case:
    """Case ``index`` of ``seed`` (redrawn from the same generator until the judge can decide)."""
    rng = np.random.default_rng([seed, index])
    size_name = list(sizes)[index % len(sizes)]
    side = max(3, int(round(sizes[size_name] * size)))
    for _ in range(MAX_DRAWS):
        scene = render_scene(rng, size)
        label = scene.objects[0].label
        rgba = render_object(label, side, rng)
        source, mask, x, y = _paste_apart(scene, rgba, rng, dilation)
        footprint = np.zeros((size, size), bool)
        footprint[y : y + side, x : x + side] = rgba[..., 3] > 127
        p_src = footprint_fraction(source, footprint, label)
        p_clean = footprint_fraction(scene.image, footprint, label)
        taken = _occupied(scene, size)
        ring = _ring(mask, taken, max(2, side // 2))
        p_ring = footprint_fraction(scene.image, ring, label)
        if p_src - max(p_clean, p_ring) >= MIN_CONTRAST:
            return Case(
                id=f"{index:04d}-{size_name}",
                source=source,
                target=scene.image,
                mask=mask,
                footprint=footprint,
                lookalikes=taken,
                label=label,
                scene=scene.scene,
                t_info=scene.label(mask),
                t_mask=label,
                size_name=size_name,
                p_src=p_src,
                p_clean=p_clean,
            )
    raise ConfigError(
        f"no decidable repeated-object case {index} of seed {seed} at {size} px in {MAX_DRAWS} "
        "draws (objects too small or too crowded to tell apart); use a larger --size or less "
        "--dilation"
    )


def build_cases(count: int, seed: int = 0, size: int = 64, dilation: int = DILATION) -> list[Case]:
    """The first ``count`` cases of ``seed`` at ``size`` px."""
    return [build_case(seed, i, size, dilation) for i in range(count)]


# ----------------------------------------------------------------------- tensors, scoring


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 ``[H,W,3]`` images -> ``[B,3,H,W]`` in [-1,1]."""
    array = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return array / 127.5 - 1.0


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """``[B,3,H,W]`` in [-1,1] -> float ``[B,H,W,3]`` on 0..255 (rounded as saved to 8 bit)."""
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return pixels.permute(0, 2, 3, 1).numpy()


def case_batch(cases: Sequence[Case]) -> dict:
    """The batch convention of ``cases``: source / target / mask tensors, prompts, ids."""
    return {
        "source": to_tensor([c.source for c in cases]),
        "target": to_tensor([c.target for c in cases]),
        "mask": torch.from_numpy(np.stack([c.mask for c in cases])).float()[:, None],
        "t_info": [c.t_info for c in cases],
        "t_mask": [c.t_mask for c in cases],
        "id": [c.id for c in cases],
    }


def mean_fill(source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The trivial baseline: each hole filled with the mean colour of its image's known pixels."""
    known = 1.0 - mask
    mean = (source * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)
    return mask * mean + known * source


def hole_scores(batch: dict, pred: torch.Tensor) -> tuple[list[dict[str, float]], np.ndarray]:
    """Per image: hole MAE / PSNR and whole-image SSIM of the composite (no judge: any pair
    with a target), and the composites as pixels (``to_pixels``) for a judge."""
    result = composite(pred.float().cpu(), batch["source"], batch["mask"])
    unit = (result.double() + 1) / 2
    target = (batch["target"].double() + 1) / 2
    mask = batch["mask"].double().expand_as(unit)
    count = mask.sum((1, 2, 3)).clamp(min=1)
    diff = (unit - target) * mask
    mae = diff.abs().sum((1, 2, 3)) / count
    mse = (diff**2).sum((1, 2, 3)) / count
    psnr = (10 * torch.log10(1 / mse)).clamp(max=PSNR_CAP).nan_to_num(PSNR_CAP)
    ssims = ssim(result, batch["target"])
    rows = [
        {"hole_mae": float(mae[i]), "hole_psnr": float(psnr[i]), "ssim": float(ssims[i])}
        for i in range(len(result))
    ]
    return rows, to_pixels(result)


def score(cases: Sequence[Case], batch: dict, pred: torch.Tensor) -> list[dict[str, float]]:
    """Per case: reappeared (0/1), p_res, hole MAE / PSNR, whole-image SSIM of the composite."""
    scored, pixels = hole_scores(batch, pred)
    rows = []
    for case, image, measured in zip(cases, pixels, scored, strict=True):
        p_res, back = case.judge(image)
        rows.append({"reappeared": float(back), "p_res": p_res, **measured})
    return rows


# ------------------------------------------------------------------------------ statistics


def resample_indices(n: int, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """``[resamples, n]`` case indices drawn with replacement (shared by every method, so
    intervals of paired differences see the same resamples)."""
    return np.random.default_rng([seed, n]).integers(0, n, size=(resamples, n))


def bootstrap(values: Sequence[float], indices: np.ndarray) -> dict[str, float]:
    """Mean of ``values`` with a percentile 95% interval over the resampled means."""
    values = np.asarray(values, np.float64)
    means = values[indices].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "lo": float(lo), "hi": float(hi)}
