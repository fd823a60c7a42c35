"""The two images CLIP looks at: the masked region and the context, both from ``source``.

Shared by the describer (zero-shot ranking) and the alignment losses (frozen image
embeddings), so that training sees exactly what describing sees. Never takes ``target``:
the ground truth under the mask cannot reach a description.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def mask_boxes(mask: torch.Tensor, margin: float = 0.15, min_size: int = 4) -> torch.Tensor:
    """``[B, 4]`` square boxes ``(x1, y1, x2, y2)`` around each mask, grown by ``margin``.

    Square so the crop keeps the object's aspect ratio when resized for CLIP; an empty mask
    gets the whole image. Boxes may extend past the border (that part reads as zero = grey).
    """
    b, _, h, w = mask.shape
    on = mask[:, 0] > 0.5
    rows, cols = on.any(dim=2), on.any(dim=1)  # [B, H], [B, W]
    ar_h = torch.arange(h, device=mask.device)
    ar_w = torch.arange(w, device=mask.device)
    big = torch.tensor(10**9, device=mask.device)
    y1 = torch.where(rows, ar_h, big).amin(dim=1).float()
    y2 = torch.where(rows, ar_h, -big).amax(dim=1).float() + 1
    x1 = torch.where(cols, ar_w, big).amin(dim=1).float()
    x2 = torch.where(cols, ar_w, -big).amax(dim=1).float() + 1
    empty = ~on.flatten(1).any(dim=1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = torch.maximum(x2 - x1, y2 - y1) * (1 + 2 * margin)
    side = side.clamp(min=min_size, max=max(h, w))
    boxes = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)
    full = torch.tensor([0.0, 0.0, float(w), float(h)], device=mask.device)
    return torch.where(empty[:, None], full, boxes)


def region_images(
    source: torch.Tensor, mask: torch.Tensor, size: int, margin: float = 0.15, fill: float = 0.0
) -> torch.Tensor:
    """``[B,3,size,size]`` in [-1,1]: the box around the mask, pixels outside it set to ``fill``."""
    m = (mask > 0.5).to(source.dtype)
    neutralised = source * m + fill * (1 - m)
    boxes = mask_boxes(mask, margin)
    rois = torch.cat(
        [torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], 1
    )
    # Area-style sampling (adaptive samples per bin): no aliasing when shrinking big regions.
    crops = roi_align(neutralised - fill, rois.to(source.dtype), (size, size), 1.0, -1, True)
    return crops + fill


def context_images(
    source: torch.Tensor, mask: torch.Tensor, size: int, fill: float = 0.0
) -> torch.Tensor:
    """``[B,3,size,size]`` in [-1,1]: the whole ``source`` with the hole set to ``fill``."""
    m = (mask > 0.5).to(source.dtype)
    context = source * (1 - m) + fill * m
    if context.shape[-2:] == (size, size):
        return context
    return F.interpolate(
        context, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def region_has_content(source: torch.Tensor, mask: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``[B]`` bool: the pixels under the mask vary (a hole pair's blank region does not)."""
    m = (mask > 0.5).to(source.dtype)
    count = m.flatten(1).sum(1).clamp(min=1)
    mean = (source * m).flatten(2).sum(2) / count[:, None]  # [B, 3]
    var = (((source - mean[:, :, None, None]) ** 2) * m).flatten(2).sum(2) / count[:, None]
    return (m.flatten(1).sum(1) > 0) & (var.amax(dim=1) > eps**2)


def clip_normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """[-1,1] images to CLIP's input normalisation."""
    x = (images + 1) / 2
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype)[None, :, None, None]
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x - mean_t) / std_t
