"""What a ``POST /api/remove`` brings, checked: image and mask files, and the options.

Every refusal is an :class:`UploadError` with an HTTP status and one sentence for the user.
Files are first only *peeked at* (format and size from the header, no pixels decoded), so a
bad upload is refused before it waits for the model; pixels are decoded during the job's turn,
which keeps at most one decoded image in memory however many clients wait.

Pixels are decoded by the same functions as ``python -m dcgd remove`` (``load_rgba`` and
``load_mask`` of :mod:`dcgd.data.images`), so the page, the API and the command fill the same
8-bit RGB view of an image the same way.
"""

from __future__ import annotations

import io
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from dcgd.components.schedulers import SAMPLERS
from dcgd.data.images import flatten_alpha, load_mask, load_rgba
from dcgd.errors import DataError
from dcgd.method.guidance import PROMPT_MODES

# The formats `remove` reads (its IMAGE_EXTENSIONS); MPO is how phones' JPEGs often open.
FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF"}
# Ranges of the numeric options, as `python -m dcgd remove` takes them: a typo, nan or inf is
# refused at once instead of running and returning garbage.
W_RANGE = (-100.0, 100.0)
SEED_RANGE = (0, 2**63 - 1)
DILATE_RANGE = (0, 1000)
MAX_STEPS = 1000  # and at most the model's training timesteps
MAX_TEXT = 1000  # characters of T_info / T_mask: CLIP reads 77 tokens anyway
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class UploadError(Exception):
    """A request the server refuses: ``status`` (4xx/5xx) and one sentence saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Peek:
    """An uploaded image's header: its size and colour profile, pixels not yet decoded."""

    width: int
    height: int
    icc_profile: bytes | None


def peek(data: bytes, what: str, max_pixels: int) -> Peek:
    """Check that ``data`` is an image of a readable format and at most ``max_pixels``."""
    if not data:
        raise UploadError(400, f"the {what} file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
            icc = image.info.get("icc_profile")
    except Image.DecompressionBombError:
        kind, width, height, icc = "huge", max_pixels, max_pixels, None  # refused just below
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        kind = None
    if kind not in FORMATS and kind != "huge":
        raise UploadError(
            400, f"the {what} is not a PNG, JPEG, WebP, BMP or TIFF image (or it is damaged)"
        )
    if width * height > max_pixels:
        raise UploadError(
            413,
            f"the {what} has {width * height / 1e6:.1f} megapixels; this server takes at most "
            f"{max_pixels / 1e6:.1f} (--max-megapixels)",
        )
    return Peek(width, height, icc)


def _decoded(data: bytes, what: str, load: Any) -> np.ndarray:
    """``load(path)`` on ``data`` written to a private temporary file (the loaders read files:
    16-bit colour goes through OpenCV, which reads a path)."""
    with tempfile.TemporaryDirectory(prefix="dcgd-app-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        try:
            return load(path)
        except DataError as err:
            # The loaders name the file; the user knows it as the uploaded image or mask.
            raise UploadError(400, str(err).replace(str(path), f"the uploaded {what}")) from None


def decode_image(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """The image as the model sees it, 8-bit RGB (transparency flattened on white, as
    ``remove`` reads it), and as uploaded, RGBA, when it has any transparency (else None)."""
    rgba = _decoded(data, "image", load_rgba)
    if rgba[..., 3].min() == 255:
        return np.ascontiguousarray(rgba[..., :3]), None
    return flatten_alpha(rgba), rgba


def filled(rgb: np.ndarray, rgba: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """What goes back: the model's result ``rgb``, or for a transparent upload the upload itself
    with only the colour under ``mask`` replaced (alpha untouched, as ``remove`` keeps it)."""
    if rgba is None:
        return rgb
    out = rgba.copy()
    under = mask.astype(bool)
    out[..., :3][under] = rgb[under]
    return out


def decode_mask(data: bytes) -> np.ndarray:
    """The mask as 0/1 ``uint8``: white (brighter than half) marks what to remove."""
    mask = _decoded(data, "mask", load_mask)
    count = int(np.count_nonzero(mask))
    if count == 0:
        raise UploadError(
            400,
            "the mask is empty (no white pixel): paint over, or upload a mask of, what to remove",
        )
    if count == mask.size:
        raise UploadError(
            400, "the mask covers the whole image, so nothing is left to fill it from"
        )
    return mask


def check_same_size(image: Peek, mask: Peek) -> None:
    if (image.width, image.height) != (mask.width, mask.height):
        raise UploadError(
            400,
            f"the mask is {mask.width}x{mask.height} pixels but the image is "
            f"{image.width}x{image.height}; the mask must match the image pixel for pixel",
        )


def encode_png(pixels: np.ndarray, icc: bytes | None) -> bytes:
    """``pixels`` (uint8 RGB or RGBA) as a PNG, with the upload's colour profile."""
    out = io.BytesIO()
    options: dict[str, Any] = {"compress_level": 3}  # fast; a local server, not an archive
    if icc:
        options["icc_profile"] = icc
    Image.fromarray(pixels).save(out, format="PNG", **options)
    return out.getvalue()


def key_of(filename: str | None) -> str:
    """The name that seeds the result, as ``remove`` seeds it: the file name without folders or
    extension (``photo.png`` -> ``photo``)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return PurePosixPath(name).stem[:200] or "image"


# ---------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Options:
    """The form's settings, checked; ``None`` means the model's default."""

    sampling: dict[str, Any]  # prompt_mode, w, steps, seed, sampler: only those given
    dilate: int
    t_info: str | None
    t_mask: str | None
    job: str | None


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _number(name: str, text: str | None, kind: type, low: float, high: float) -> Any:
    if _blank(text):
        return None
    try:
        value = kind(text.strip())
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)) or not low <= value <= high:
        noun = "a whole number" if kind is int else "a number"
        shown = f"{low:g} to {high:g}" if kind is float else f"{low} to {high}"
        raise UploadError(400, f"{name} must be {noun} from {shown}; got {text[:40]!r}")
    return value


def _choice(name: str, text: str | None, choices: list[str]) -> str | None:
    if _blank(text):
        return None
    if text.strip() not in choices:
        raise UploadError(400, f"{name} must be one of {', '.join(choices)}; got {text[:40]!r}")
    return text.strip()


def _text(name: str, text: str | None) -> str | None:
    """A description; empty means "not given" (the describer's, or "")."""
    if _blank(text):
        return None
    if len(text) > MAX_TEXT:
        raise UploadError(400, f"{name} is {len(text)} characters long; at most {MAX_TEXT}")
    return text  # as typed: `remove --t-info` passes its text unchanged too


def parse_options(form: dict[str, str | None], train_timesteps: int) -> Options:
    """Check the text fields of the form (all optional) against their ranges."""
    job = form.get("job")
    if not _blank(job) and not JOB_ID.fullmatch(job.strip()):
        raise UploadError(400, "job must be 1 to 64 letters, digits, '-' or '_'")
    sampling = {
        "prompt_mode": _choice("prompt_mode", form.get("prompt_mode"), list(PROMPT_MODES)),
        "sampler": _choice("sampler", form.get("sampler"), sorted(SAMPLERS)),
        "w": _number("w", form.get("w"), float, *W_RANGE),
        "steps": _number("steps", form.get("steps"), int, 1, min(MAX_STEPS, train_timesteps)),
        "seed": _number("seed", form.get("seed"), int, *SEED_RANGE),
    }
    dilate = _number("dilate", form.get("dilate"), int, *DILATE_RANGE)
    return Options(
        sampling={k: v for k, v in sampling.items() if v is not None},
        dilate=dilate or 0,
        t_info=_text("t_info", form.get("t_info")),
        t_mask=_text("t_mask", form.get("t_mask")),
        job=None if _blank(job) else job.strip(),
    )
