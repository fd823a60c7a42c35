"""Which attention kernel the U-Net and VAE run: PyTorch SDPA or diffusers' classic one.

``sdpa`` (``AttnProcessor2_0``: ``F.scaled_dot_product_attention``, flash / memory-efficient
kernels on GPUs) is what diffusers picks by default; naming it in the config makes the choice
visible and lets a run compare it with ``classic`` (``AttnProcessor``: explicit softmax of
``QKᵀ``, the reference). Both compute the same attention.
"""

from __future__ import annotations

from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from torch import nn

from dcgd.errors import ConfigError

ATTENTION: dict[str, type] = {"sdpa": AttnProcessor2_0, "classic": AttnProcessor}


def set_attention(model: nn.Module, kind: str) -> None:
    """Give every attention layer of a diffusers model the ``kind`` processor."""
    if kind not in ATTENTION:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTION)}; got {kind!r}")
    if getattr(model, "attn_processors", None):
        model.set_attn_processor(ATTENTION[kind]())
