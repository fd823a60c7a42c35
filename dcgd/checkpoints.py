"""The one place dcgd opens a torch file (``.ckpt``, ``.pt``, ``.pth``): it never runs its code.

``torch.load`` unpickles, and a pickle may call any Python function while it loads (a
checkpoint from a stranger can delete files or start a shell). ``weights_only=True`` allows
only tensors and plain data (dicts, lists, strings, numbers, bytes), which is all a dcgd
checkpoint holds: weights as tensors; hyperparameters, component configs and tokenizer files
as plain data. A file that needs more is refused with one line naming what it contains;
nothing in it has run by then. There is no "trust" switch: a checkpoint dcgd wrote never
needs one (see SECURITY.md).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from dcgd.errors import ModelLoadError


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """The content of a torch file, on the CPU, memory-mapped where the format allows.

    Raises ModelLoadError (one line) when the file is missing, truncated or not a torch
    file, or would run code to load."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{what} {path} does not exist; give the path of an existing file")
    with warnings.catch_warnings():
        # torch warns about pickle protocols it did not write; the refusal below says enough.
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        try:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):  # only the legacy (pre-zip) format cannot be mapped
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            blocked = _BLOCKED_GLOBAL.findall(str(err))
            if blocked:  # a pickle that names a Python callable: the way a file runs code
                raise ModelLoadError(_refusal(path, what, blocked)) from None
            raise ModelLoadError(_unreadable(path, what, "not a pickle torch writes")) from None
        except Exception as err:  # zip, EOF and torch errors all mean "not a (whole) torch file"
            message = " ".join(str(err).split())
            # Long library messages are cut to their first sentence; a bare key is not a reason.
            reason = message.split(". ")[0][:120] if len(message) > 12 else type(err).__name__
            raise ModelLoadError(_unreadable(path, what, reason)) from None


_BLOCKED_GLOBAL = re.compile(r"unsupported GLOBAL (\S+)")


def _refusal(path: Path, what: str, blocked: list[str]) -> str:
    try:  # every callable the file names, not only the first one the unpickler met
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path) or blocked
    except Exception:  # the legacy format cannot be listed
        found = blocked
    names = f" ({', '.join(found[:4])}{', ...' if len(found) > 4 else ''})"
    return (
        f"refusing to load {what} {path}: it holds Python objects besides tensors and plain "
        f"data{names}, and loading it would run code from the file. dcgd never writes such "
        "files; do not use it unless you know who made it and why (see SECURITY.md)"
    )


def _unreadable(path: Path, what: str, reason: str) -> str:
    return (
        f"cannot read {what} {path}: it is truncated or not a torch file ({reason}); "
        "give a complete file (a .ckpt from 'python -m dcgd fit' for a dcgd model)"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint (a dict with a ``state_dict``), read safely, or a one-line error."""
    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ModelLoadError(
            f"{path} is not a Lightning checkpoint (no state_dict); give a .ckpt written by "
            "'python -m dcgd fit'"
        )
    return checkpoint


def read_model_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of a DCGD model (``DCGDModule``), read safely, or a one-line error.

    The one reader behind ``remove``, ``export``, the app, sweeps and benchmarks (through
    ``dcgd.sampling.pipeline.load_pipeline``); ``fit --ckpt_path`` checks its file with
    :func:`load_checkpoint` before Lightning resumes from it."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(
            f"checkpoint {path} does not exist; give a .ckpt written by 'python -m dcgd fit' "
            "(e.g. runs/<name>/checkpoints/last.ckpt) or a directory written by 'dcgd export'"
        )
    checkpoint = load_checkpoint(path)
    if not any(key.startswith("unet.") for key in checkpoint["state_dict"]):
        raise ModelLoadError(
            f"{path} is not a checkpoint of the DCGD U-Net (DCGDModule): it holds no 'unet.' "
            "weights. A text-encoder checkpoint is loaded through the U-Net config's "
            "text_encoder option instead."
        )
    return checkpoint
