"""Loading a component from a hub id or a local directory: the real thing or one clear line.

Offline machines are the norm here: a missing folder or a hub id absent from the local cache
must say what could not load, from where, and what to give instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers.utils import is_accelerate_available

from dcgd.errors import ModelLoadError, one_line


def from_pretrained(
    cls: Any, path_or_id: str, subfolder: str | None, what: str, **kwargs: Any
) -> Any:
    """``cls.from_pretrained(path_or_id, subfolder=...)``; ``what`` names the component in
    the error ("a U-Net", "a CLIP tokenizer", ...)."""
    origin = str(Path(path_or_id) / subfolder) if subfolder else path_or_id
    if subfolder:
        kwargs["subfolder"] = subfolder
    try:
        return cls.from_pretrained(path_or_id, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not load {what} from {origin!r}: {one_line(err)}. Give a local directory or "
            "a hub id that is in the local Hugging Face cache (this machine may be offline)."
        ) from None


def diffusers_kwargs() -> dict[str, Any]:
    """Without accelerate, diffusers warns on every load unless told not to try."""
    return {"low_cpu_mem_usage": is_accelerate_available()}
