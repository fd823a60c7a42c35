"""Per-image full-reference metrics of the paper's Table 1, on the composited result.

Inputs follow the batch convention: images float ``[B,3,H,W]`` in ``[-1,1]``, masks
``[B,1,H,W]`` in ``{0,1}`` (1 = filled). Every function returns one score per image (``[B]``);
averaging happens later, per bucket (``dcgd.eval.bucketed``). The protocol is ``PROTOCOL``:
print it next to every table, because other papers' numbers use other windows and ranges.

Pretrained backbones (LPIPS, FID) are never faked: when the real weights cannot be loaded the
metric is left out with a warning, because a random backbone gives plausible-looking numbers.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from dcgd.checkpoints import load_torch_file
from dcgd.errors import DataError, ModelLoadError

if TYPE_CHECKING:
    from torchmetrics.image.fid import FrechetInceptionDistance


PROTOCOL: dict[str, str] = {
    "composite": "scored image = mask * pred + (1 - mask) * source; pred clamped to [-1,1]",
    "psnr": "per image, MSE over C,H,W on [0,1], data_range 1, 10*log10(1/MSE), then averaged",
    "ssim": "Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03, data_range 1, [0,1] RGB, "
    "valid region (border of 5 px cropped), mean over channels and pixels",
    "mae": "mean |a - b| over C,H,W on [0,1] (not EdgeConnect's sum|a-b|/sum(a+b))",
    "lpips": "lpips v0.1 linear layers, inputs in [-1,1]; backbone named in the key "
    "(lpips_alex, lpips_vgg); torchvision ImageNet weights",
    "buckets": "mask ratio = masked pixels / all pixels, half-open buckets [lo, hi); "
    "'all' = every image inside a bucket",
}

# Which way is better, for tables: True = higher is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "psnr": True,
    "ssim": True,
    "mae": False,
    "lpips_alex": False,
    "lpips_vgg": False,
    "fid": False,
    "residue": False,
}

# The torchvision checkpoints the lpips package's backbones load (same file names as the hub).
LPIPS_BACKBONE_URLS: dict[str, str] = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
SSIM_WINDOW = 11
FID_INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)


class MetricUnavailableWarning(UserWarning):
    """A metric was left out because the real pretrained weights could not be loaded."""


# metric -> why it was left out in this process (shown next to the tables).
LEFT_OUT: dict[str, str] = {}


def warn_unavailable(metric: str, reason: str) -> None:
    """Warn once per process that ``metric`` is left out, and why."""
    if metric not in LEFT_OUT:
        warnings.warn(f"{metric} left out: {reason}", MetricUnavailableWarning, stacklevel=3)
    LEFT_OUT[metric] = reason


def higher_is_better(metric: str) -> bool | None:
    """Direction of a metric name (None when unknown: tables then mark no best value).
    Removal scores ``clip@N`` are success rates (higher is better)."""
    if metric.startswith("clip@"):
        return True
    return HIGHER_IS_BETTER.get(metric)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """``[-1,1]`` -> ``[0,1]``."""
    return (x + 1.0) / 2.0


def check_range(x: torch.Tensor, name: str, lo: float = -1.0, hi: float = 1.0) -> None:
    """Raise DataError when ``x`` leaves ``[lo, hi]`` (a small float tolerance is allowed)."""
    tol = 1e-3
    if x.numel() and (float(x.min()) < lo - tol or float(x.max()) > hi + tol):
        raise DataError(
            f"{name} has values in [{float(x.min()):.3f}, {float(x.max()):.3f}], outside "
            f"[{lo:g}, {hi:g}]: images must be float in [-1,1] (the batch convention); "
            "convert [0,1] images with x * 2 - 1"
        )


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (``[B]``) on ``[0,1]`` with data range 1; inf for identical images.

    ``dim=(1,2,3)``: torchmetrics' default pools the MSE over the whole batch. float64 so the
    value does not depend on the image size (float32 sums lose digits on 512x512x3)."""
    out = peak_signal_noise_ratio(
        to_unit(pred.double()),
        to_unit(target.double()),
        data_range=1.0,
        dim=(1, 2, 3),
        reduction="none",
    )
    return out.to(pred.dtype)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (``[B]``): Gaussian window 11, sigma 1.5, data range 1 on ``[0,1]`` RGB."""
    # torchmetrics averages the reflect-padded border too; like scikit-image (and Wang et
    # al.'s 'valid' filtering) we average only where the 11x11 window lies inside the image.
    # The maps in float32 (float64 convolutions are 10-60x slower on CPU; the maps differ from
    # float64 by ~5e-6), their mean in float64.
    pad = SSIM_WINDOW // 2
    if min(pred.shape[-2:]) <= 2 * pad:
        raise DataError(
            f"SSIM needs images larger than {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
            f"{tuple(pred.shape[-2:])}"
        )
    _, full = structural_similarity_index_measure(
        to_unit(pred.float()),
        to_unit(target.float()),
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=1.0,
        reduction="none",
        return_full_image=True,
    )
    return full[..., pad:-pad, pad:-pad].double().flatten(1).mean(dim=1).to(pred.dtype)


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute error (``[B]``) on ``[0,1]``."""
    diff = to_unit(pred.double()) - to_unit(target.double())
    return diff.abs().flatten(1).mean(dim=1).to(pred.dtype)


# ----------------------------------------------------------------------------------- LPIPS


def _checkpoint_name(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def find_checkpoint(url: str, weights_dir: str | Path | None = None) -> Path | None:
    """The local copy of a hub checkpoint: in ``weights_dir`` if given, else the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``, where torchvision and torch-fidelity store downloads)."""
    name = _checkpoint_name(url)
    folders = [Path(weights_dir)] if weights_dir else []
    folders.append(Path(torch.hub.get_dir()) / "checkpoints")
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return None


def downloads_allowed() -> bool:
    """Offline when ``HF_HUB_OFFLINE`` or ``DCGD_OFFLINE`` is set (tests set the former)."""
    return not any(
        os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "DCGD_OFFLINE")
    )


def fetch_checkpoint(
    url: str, metric: str, weights_dir: str | Path | None = None, allow_download: bool | None = None
) -> Path | None:
    """Find (or, when allowed, download) a checkpoint; None plus a warning when impossible."""
    path = find_checkpoint(url, weights_dir)
    if path is not None:
        return path
    if allow_download is None:
        allow_download = downloads_allowed()
    name = _checkpoint_name(url)
    where = f"{weights_dir} or " if weights_dir else ""
    hint = f"put {name} in {where}{Path(torch.hub.get_dir()) / 'checkpoints'} (or set TORCH_HOME)"
    if not allow_download:
        warn_unavailable(metric, f"{name} is not on disk and downloads are off; {hint}")
        return None
    try:
        torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
    except Exception as err:  # offline, proxy, disk: any failure means no real weights
        warn_unavailable(metric, f"could not download {url} ({err}); {hint}")
        return None
    return find_checkpoint(url, weights_dir)


class LPIPSScorer(torch.nn.Module):
    """LPIPS of the ``lpips`` package with its v0.1 linear layers and a torchvision backbone
    loaded from a checkpoint file, so the real weights come from a known place."""

    def __init__(self, net: str, backbone_checkpoint: str | Path) -> None:
        super().__init__()
        import lpips

        if net not in LPIPS_BACKBONE_URLS:
            raise ModelLoadError(f"unknown LPIPS backbone {net!r}; use one of alex, vgg")
        self.net_name = net
        with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation noise
            warnings.simplefilter("ignore")
            # pnet_rand=True only avoids the download here; the backbone is loaded just below.
            self.lpips = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        state = load_torch_file(backbone_checkpoint, what=f"LPIPS {net} backbone")
        state = state if isinstance(state, dict) else {}
        # lpips splits torchvision's `features` into slices named slice<k>.<index>.
        mapped = {}
        for key in self.lpips.net.state_dict():
            _, index, param = key.split(".")
            mapped[key] = state.get(f"features.{index}.{param}")
        missing = [k for k, v in mapped.items() if v is None]
        if missing:
            raise ModelLoadError(
                f"{backbone_checkpoint} is not a torchvision {net} checkpoint "
                f"(missing features for {missing[:3]}...)"
            )
        self.lpips.net.load_state_dict(mapped, strict=True)
        self.eval().requires_grad_(False)

    @property
    def key(self) -> str:
        return f"lpips_{self.net_name}"

    @torch.no_grad()
    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        value_range: tuple[float, float] = (-1.0, 1.0),
    ) -> torch.Tensor:
        """Per-image LPIPS (``[B]``). Images are in ``value_range``: ``(-1, 1)`` (the batch
        convention) or ``(0, 1)``, converted explicitly; anything outside is refused."""
        if tuple(value_range) not in ((-1.0, 1.0), (0.0, 1.0)):
            raise DataError(f"value_range must be (-1, 1) or (0, 1), got {value_range}")
        lo, hi = value_range
        check_range(pred, "LPIPS pred", lo, hi)
        check_range(target, "LPIPS target", lo, hi)
        if lo == 0.0:
            pred, target = pred * 2 - 1, target * 2 - 1
        return self.lpips(pred, target).flatten()


def load_lpips(
    net: str,
    weights_dir: str | Path | None = None,
    allow_download: bool | None = None,
) -> LPIPSScorer | None:
    """An LPIPS scorer on the real ImageNet backbone, or None (with a warning) when those
    weights are neither on disk nor downloadable. Never falls back to a random backbone."""
    if net not in LPIPS_BACKBONE_URLS:
        raise ModelLoadError(f"unknown LPIPS backbone {net!r}; use one of alex, vgg")
    path = fetch_checkpoint(LPIPS_BACKBONE_URLS[net], f"lpips_{net}", weights_dir, allow_download)
    return None if path is None else LPIPSScorer(net, path)


# ------------------------------------------------------------------------------------- FID


def load_fid(
    weights_dir: str | Path | None = None, allow_download: bool | None = None
) -> FrechetInceptionDistance | None:
    """torchmetrics' FID on torch-fidelity's Inception weights, or None with a warning.

    FID is a set-level metric (no per-image score): feed ``update(x, real=...)`` with uint8
    images. It needs the ``torch-fidelity`` package and the Inception checkpoint.
    """
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        warn_unavailable(
            "fid", "the torch-fidelity package is not installed (pip install torch-fidelity)"
        )
        return None
    path = fetch_checkpoint(FID_INCEPTION_URL, "fid", weights_dir, allow_download)
    if path is None:
        return None
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
