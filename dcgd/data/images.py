"""Safe image and mask loading, resizing and conversion to tensors.

Every decode goes through PIL and ends as ``uint8`` RGB (or RGBA for cut-outs): grayscale is
repeated to three channels, transparency is flattened on a stated background, 16-bit data is
scaled (not clipped) to 8 bits. Anything unreadable raises :class:`DataError` naming the file.

:func:`load_kept` / :func:`save_kept` are for tools that write an edited image back
(``python -m dcgd remove``): the pixels stay in the file's own mode and depth next to the 8-bit
RGB view a model works on, and :func:`write_atomically` replaces a file only once its new
content is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dcgd.errors import DataError
from dcgd.files import save_atomic, write_atomic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Transparent pixels of an RGBA photo are shown on white, as an image viewer would.
ALPHA_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def index_images(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """The images under ``folder`` by name: ``{relative path without suffix: file}``, and the
    names with more than one file (``a.png`` and ``a.jpg``), which cannot be paired by name
    and are left out of the first."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):  # rglob does not descend into symlinked folders
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    unique = {k: v[0] for k, v in found.items() if len(v) == 1}
    return unique, {k: v for k, v in found.items() if len(v) > 1}


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
        image.info["dcgd_rawmode"] = _rawmode(image)
        image.load()  # PIL decodes lazily: force it so truncation shows up here
    except FileNotFoundError:
        raise DataError(
            f"image {path} does not exist; check the dataset root and file list"
        ) from None
    except PermissionError:
        raise DataError(
            f"cannot read image {path}: permission denied; check the file's permissions"
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
    return image.mode in ("RGB", "RGBA") and "16" in _rawmode(image)


def _rawmode(image: Image.Image) -> str:
    """How the (not yet loaded) file stores its pixels, e.g. "RGB;16B"; "" if unknown."""
    if not image.tile:
        return ""
    args = image.tile[0].args
    rawmode = args[0] if isinstance(args, tuple) else args
    return rawmode if isinstance(rawmode, str) else ""


def _scale_sixteen(data: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by rounding ``v / 257`` (so 65535 -> 255, 257 -> 1)."""
    return np.clip(np.rint(data.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _read_sixteen_bit_colour(path: Path) -> np.ndarray:
    """A 48/64-bit colour file as ``uint16`` RGB(A), through OpenCV (PIL has no such mode)."""
    data = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if data is None or data.dtype != np.uint16 or data.ndim != 3:
        raise _corrupt(path, "16-bit colour data could not be decoded")
    order = cv2.COLOR_BGRA2RGBA if data.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(data, order)


def _decode_sixteen_bit_colour(path: Path) -> np.ndarray:
    return _scale_sixteen(_read_sixteen_bit_colour(path))


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


# ---------------------------------------------------------------- images kept as stored
# Modes an edited image is written back in, unchanged. "RGB;16" / "RGBA;16" are 48/64-bit
# colour, which PIL cannot hold (it truncates them to 8 bits): OpenCV reads and writes those.
KEPT_MODES = ("RGB", "RGBA", "L", "LA", "1", "P", "I;16", "RGB;16", "RGBA;16")
# The modes each output format holds exactly (.webp is written lossless; .jpg is lossy).
WRITABLE_MODES: dict[str, tuple[str, ...]] = {
    ".png": KEPT_MODES,
    ".tif": KEPT_MODES,
    ".tiff": KEPT_MODES,
    ".bmp": ("RGB", "L", "1", "P"),
    ".webp": ("RGB", "RGBA"),
    ".jpg": ("RGB", "L"),
    ".jpeg": ("RGB", "L"),
}
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
_SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N")
_ICC_FORMATS = ("PNG", "TIFF", "JPEG", "WEBP")


@dataclass
class KeptImage:
    """An image as its file stores it, plus the 8-bit RGB view a model works on.

    ``pixels``: ``uint8`` (``bool`` for mode "1", palette indices for "P", ``uint16`` for the
    16-bit modes), ``[H,W]`` or ``[H,W,C]``. ``rgb``: ``uint8`` ``[H,W,3]``, as
    :func:`load_rgb` reads it (alpha flattened on white, 16 bits scaled to 8).
    """

    pixels: np.ndarray
    mode: str
    rgb: np.ndarray
    palette: np.ndarray | None = None  # "P": [N,3] uint8
    icc_profile: bytes | None = None

    def filled(self, fill: np.ndarray, mask: np.ndarray) -> KeptImage:
        """A copy with ``fill`` (``uint8`` ``[H,W,3]``) written under ``mask`` only, in this
        image's mode: alpha is never touched, gray modes take the fill's luma, 16-bit modes
        its 8-bit value times 257, "P" the nearest palette colour. Pixels outside ``mask`` are
        copied from ``pixels``, so they keep their exact stored value. The copy's ``rgb`` is
        ``fill``."""
        under = mask.astype(bool)
        pixels = self.pixels.copy()
        mode = self.mode
        if mode in ("RGB", "RGBA"):
            pixels[..., :3][under] = fill[under]
        elif mode in ("RGB;16", "RGBA;16"):
            pixels[..., :3][under] = fill[under].astype(np.uint16) * 257
        elif mode == "P":
            assert self.palette is not None
            pixels[under] = _nearest_colour(self.palette, fill[under])
        else:  # gray: PIL's own luma, as a viewer converting RGB to L would
            gray = np.asarray(Image.fromarray(np.ascontiguousarray(fill)).convert("L"))
            if mode == "L":
                pixels[under] = gray[under]
            elif mode == "LA":
                pixels[..., 0][under] = gray[under]
            elif mode == "1":
                pixels[under] = gray[under] >= 128
            else:  # "I;16"
                pixels[under] = gray[under].astype(np.uint16) * 257
        return replace(self, pixels=pixels, rgb=fill)


def _nearest_colour(palette: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Index of the nearest ``palette`` entry (squared RGB distance) for each of ``colours``."""
    table = palette.astype(np.int32)
    out = np.empty(len(colours), np.uint8)
    for start in range(0, len(colours), 65536):  # [chunk, 256] distances: bounded memory
        chunk = colours[start : start + 65536].astype(np.int32)
        distance = ((chunk[:, None, :] - table[None]) ** 2).sum(-1)
        out[start : start + 65536] = distance.argmin(-1)
    return out


def _refuse(path: Path, what: str) -> DataError:
    return DataError(
        f"image {path} {what}, which cannot be written back unchanged; convert it to an RGB or "
        "RGBA PNG first"
    )


def load_kept(path: str | Path) -> KeptImage:
    """An image in its own mode and depth (see :data:`KEPT_MODES`) with its 8-bit RGB view.

    Raises :class:`DataError` for the modes that cannot be written back as they were: CMYK
    and other colour spaces (converting them to RGB and back changes every pixel), 32-bit
    integer or float pixels, a palette with a transparent colour, 16-bit gray + alpha, and
    files holding several frames (animations, multi-page TIFF).
    """
    path = Path(path)
    image = _open(path)
    if getattr(image, "n_frames", 1) > 1:
        raise DataError(
            f"image {path} holds {image.n_frames} frames (an animation or multi-page file); "
            "save the one frame to edit as its own PNG first"
        )
    mode, palette = image.mode, None
    rawmode = image.info.get("dcgd_rawmode", "")
    if "16" in rawmode and rawmode.startswith("LA"):  # PIL shows 16-bit gray + alpha as RGBA
        raise _refuse(path, "is 16-bit gray with alpha")
    if image.info.get("dcgd_sixteen_bit_colour"):
        pixels = _read_sixteen_bit_colour(path)
        mode = "RGBA;16" if pixels.shape[2] == 4 else "RGB;16"
    elif mode in _SIXTEEN_BIT_GRAY:
        pixels, mode = np.asarray(image).astype(np.uint16), "I;16"
    elif mode == "CMYK":
        raise _refuse(path, "is CMYK (removal works in RGB, and converting back changes colours)")
    elif mode == "P":
        if "transparency" in image.info:
            raise _refuse(path, "is a palette image with a transparent colour")
        pixels = np.asarray(image).copy()
        palette = np.asarray(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
    elif mode in ("RGB", "RGBA", "L", "LA", "1"):
        if "16" in rawmode:  # 16 bits PIL would truncate to 8 in this mode
            raise _refuse(path, f"is 16-bit {mode}")
        pixels = np.asarray(image).copy()
    else:
        raise _refuse(path, f"has pixel mode {mode}")
    rgba = _to_rgba_array(image, path)
    rgb = np.ascontiguousarray(rgba[..., :3]) if rgba[..., 3].min() == 255 else flatten_alpha(rgba)
    return KeptImage(pixels, mode, rgb, palette, image.info.get("icc_profile"))


def writable(mode: str, suffix: str) -> bool:
    """Whether a file named ``*<suffix>`` holds a :class:`KeptImage` of ``mode``."""
    return mode in WRITABLE_MODES.get(suffix.lower(), ())


def save_kept(image: KeptImage, path: str | Path) -> None:
    """Write ``image`` to ``path`` in its own mode, whole or not at all (a temporary file in
    the same folder renamed onto ``path``: :mod:`dcgd.files`; a symlink there is replaced,
    never written through).

    The format follows the suffix; it must hold the mode (:func:`writable`). WebP is written
    lossless, JPEG at quality 95. The ICC profile is kept (except for 16-bit colour).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not writable(image.mode, suffix):
        raise DataError(
            f"{path}: a {suffix} file cannot hold a {image.mode} image; write it as .png or .tif"
        )
    if image.mode in ("RGB;16", "RGBA;16"):
        order = cv2.COLOR_RGBA2BGRA if image.mode == "RGBA;16" else cv2.COLOR_RGB2BGR
        ok, data = cv2.imencode(suffix, cv2.cvtColor(image.pixels, order))
        if not ok:
            raise DataError(f"OpenCV could not encode {path} as 16-bit {suffix}; use .png")
        write_atomic(path, data.tobytes())
        return
    if image.mode == "P":
        pil = Image.fromarray(image.pixels, "P")
        assert image.palette is not None
        pil.putpalette(image.palette.reshape(-1).tolist())
    else:
        pil = Image.fromarray(image.pixels)  # infers RGB, RGBA, L, LA, 1 and I;16
    fmt = Image.registered_extensions()[suffix]
    options: dict[str, object] = {}
    if fmt == "WEBP":
        options.update(lossless=True, exact=True)  # exact: keep colour under alpha 0 too
    elif fmt == "JPEG":
        options.update(quality=95)
    if image.icc_profile and fmt in _ICC_FORMATS:
        options["icc_profile"] = image.icc_profile
    save_atomic(path, lambda tmp: pil.save(tmp, format=fmt, **options))


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
