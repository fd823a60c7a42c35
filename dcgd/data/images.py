"""Safe image and mask loading, resizing and conversion to tensors.

Every decode goes through PIL and ends as ``uint8`` RGB (or RGBA for cut-outs): grayscale is
repeated to three channels, transparency is flattened on a stated background, 16-bit data is
scaled (not clipped) to 8 bits. Anything unreadable raises :class:`DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dcgd.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Transparent pixels of an RGBA photo are shown on white, as an image viewer would.
ALPHA_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _corrupt(path: Path, err: object) -> DataError:
    return DataError(
        f"cannot decode image {path}: {err}. The file is corrupt or truncated; "
        "re-extract it from the dataset archive or remove it from the file list"
    )


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        # PIL forgets the raw pixel format once loaded; remember whether it was 16-bit colour.
        image.info["dcgd_sixteen_bit_colour"] = _sixteen_bit_colour(image)
        image.load()  # PIL decodes lazily: force it so truncation shows up here
    except FileNotFoundError:
        raise DataError(
            f"image {path} does not exist; check the dataset root and file list"
        ) from None
    except Image.DecompressionBombError as err:
        raise DataError(
            f"image {path} is too large to decode safely ({err}); downscale it, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise _corrupt(path, err) from None
    return image


def _sixteen_bit_colour(image: Image.Image) -> bool:
    """True for 48/64-bit colour files, which PIL reduces to 8 bits by truncation."""
    if image.mode not in ("RGB", "RGBA") or not image.tile:
        return False
    args = image.tile[0].args
    rawmode = args[0] if isinstance(args, tuple) else args
    return isinstance(rawmode, str) and "16" in rawmode


def _scale_sixteen(data: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by rounding ``v / 257`` (so 65535 -> 255, 257 -> 1)."""
    return np.clip(np.rint(data.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _decode_sixteen_bit_colour(path: Path) -> np.ndarray:
    data = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if data is None or data.dtype != np.uint16 or data.ndim != 3:
        raise _corrupt(path, "16-bit colour data could not be decoded")
    order = cv2.COLOR_BGRA2RGBA if data.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return _scale_sixteen(cv2.cvtColor(data, order))


def _to_rgba_array(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if image.info.get("dcgd_sixteen_bit_colour"):
        array = _decode_sixteen_bit_colour(path)
        if array.shape[2] == 3:
            array = np.dstack([array, np.full(array.shape[:2], 255, np.uint8)])
        return array
    if mode in _SIXTEEN_BIT_MODES:
        gray = _scale_sixteen(np.asarray(image))
        return np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    if mode == "F":
        raise DataError(
            f"image {path} holds floating-point pixels (mode F); save it as 8- or 16-bit PNG"
        )
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode not in ("RGB", "RGBA"):
        # L, LA, 1, CMYK, YCbCr, ...: PIL's own conversions are right for these.
        image = image.convert("RGBA" if "A" in mode else "RGB")
    array = np.asarray(image)
    if array.shape[-1] == 3:
        array = np.dstack([array, np.full(array.shape[:2], 255, np.uint8)])
    return np.ascontiguousarray(array)


def load_rgba(path: str | Path) -> np.ndarray:
    """An image as ``uint8`` ``[H,W,4]`` (opaque alpha where the file has none)."""
    path = Path(path)
    return _to_rgba_array(_open(path), path)


def flatten_alpha(
    rgba: np.ndarray, background: tuple[int, int, int] = ALPHA_BACKGROUND
) -> np.ndarray:
    """Composite ``[H,W,4]`` on a flat ``background`` colour -> ``uint8`` ``[H,W,3]``."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + np.float32(background) * (1.0 - alpha)
    return np.rint(rgb).astype(np.uint8)


def load_rgb(path: str | Path, background: tuple[int, int, int] = ALPHA_BACKGROUND) -> np.ndarray:
    """An image as ``uint8`` ``[H,W,3]``; transparency is flattened on ``background``."""
    path = Path(path)
    image = _open(path)
    if image.mode == "RGB" and not image.info.get("dcgd_sixteen_bit_colour"):
        return np.asarray(image).copy()
    rgba = _to_rgba_array(image, path)
    if rgba[..., 3].min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    return flatten_alpha(rgba, background)


def load_mask(path: str | Path) -> np.ndarray:
    """A mask file as 0/1 ``uint8`` ``[H,W]``: white (> half range) = remove."""
    path = Path(path)
    rgba = _to_rgba_array(_open(path), path)
    gray = rgba[..., :3].max(axis=-1)
    return (gray > 127).astype(np.uint8)


def check_mask(
    mask: np.ndarray, image_shape: tuple[int, ...], mask_name: str, image_name: str
) -> None:
    """Raise :class:`DataError` for a mask that cannot be used with its image."""
    if mask.shape[:2] != tuple(image_shape[:2]):
        mh, mw = mask.shape[:2]
        ih, iw = image_shape[:2]
        raise DataError(
            f"mask {mask_name} is {mw}x{mh} but its image {image_name} is {iw}x{ih} (width x "
            "height); masks must match their image pixel for pixel. Resize the mask with "
            "nearest-neighbour to the image size, or pair it with the right image"
        )
    count = int(np.count_nonzero(mask))
    if count == 0:
        raise DataError(
            f"mask {mask_name} is empty (no white pixel): there is nothing to remove. "
            "White (255) marks the region to fill; check the mask was not saved inverted"
        )
    if count == mask.size:
        raise DataError(
            f"mask {mask_name} covers the whole image {image_name}: nothing is left to fill "
            "from. White (255) marks the region to fill; check the mask was not saved inverted"
        )


def load_image_and_mask(
    image_path: str | Path, mask_path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """An image with its mask, checked: same size, neither empty nor full."""
    image = load_rgb(image_path)
    mask = load_mask(mask_path)
    check_mask(mask, image.shape, str(mask_path), str(image_path))
    return image, mask


def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (area filter when shrinking)."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    if scale == 1.0:
        return image
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, new, interpolation=interpolation)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to ``size`` and take the centred square."""
    image = resize_short_side(image, size)
    h, w = image.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[y : y + size, x : x + size])


def random_crop(
    image: np.ndarray, size: int, rng: np.random.Generator, min_scale: float = 0.6
) -> np.ndarray:
    """A square crop of side ``min_scale..1`` times the short side, resized to ``size``."""
    h, w = image.shape[:2]
    side = int(round(min(h, w) * float(rng.uniform(min_scale, 1.0))))
    side = max(1, min(side, h, w))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = image[y : y + side, x : x + side]
    if side != size:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
        crop = cv2.resize(crop, (size, size), interpolation=interpolation)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


# Conversions run in numpy: a few hundred thousand elements per sample is far too little work
# for torch's intra-op threads, whose start-up dominates (and balloons on a busy machine).


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8`` ``[H,W,3]`` -> float ``[3,H,W]`` in [-1, 1]."""
    array = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    array /= np.float32(127.5)
    array -= np.float32(1.0)
    return torch.from_numpy(array)


def mask_to_tensor(mask: np.ndarray) -> torch.Tensor:
    """0/1 ``uint8`` ``[H,W]`` -> float ``[1,H,W]``."""
    return torch.from_numpy(np.ascontiguousarray(mask[None], dtype=np.float32))
