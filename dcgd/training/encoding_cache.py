"""Frozen encoders' outputs kept in memory, so a repeated input is encoded once.

The training loss encodes three things per sample with frozen networks: the target (VAE
posterior), the condition images of eq. 5 (VAE latents) and the prompts (text states). When
the same input comes back (a fixed validation set every validation, a fixed crop of a 256 px
image every epoch, the few hundred scene and object names of the descriptions), the cache
returns what the encoder gave the first time.

Keys are CONTENT, never sample ids: a training id names a random crop and mask that change
every epoch, so an id-keyed cache would serve stale latents. Images are keyed by a hash of
their exact bytes (shape and dtype included), prompts by their text, both with the autocast
dtype in force (bf16 states differ from fp32 ones). Only frozen encoders may be cached: the
module refuses the cache while the text encoder trains.

Memory: least recently used entries go first once the cache holds ``max_bytes``. Entries stay
on the device they were computed on. Hashing copies each image to the CPU: worth it when the
encoder costs more than that copy and hash, i.e. with a VAE, never in pixel space.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

from dcgd.components.text_encoder import TextConditioner
from dcgd.errors import ConfigError


def content_keys(kind: str, images: torch.Tensor) -> list[str]:
    """One key per image: ``kind``, autocast state and a hash of the exact bytes."""
    prefix = f"{kind}|{_autocast_state(images.device)}|{tuple(images.shape[1:])}|{images.dtype}"
    host = images.detach().contiguous().cpu()
    if host.dtype == torch.bfloat16:  # numpy has no bf16: hash the same bits as int16
        host = host.view(torch.int16)
    return [
        prefix + "|" + hashlib.blake2b(x.numpy().tobytes(), digest_size=16).hexdigest()
        for x in host
    ]


def text_keys(kind: str, prompts: Sequence[str], device: torch.device) -> list[str]:
    return [f"{kind}|{_autocast_state(device)}|{p}" for p in prompts]


def _autocast_state(device: torch.device) -> str:
    if torch.is_autocast_enabled(device.type):
        return str(torch.get_autocast_dtype(device.type))
    return "off"


class EncodingCache:
    """A bounded in-memory LRU from content keys to per-sample encoder outputs."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(
        self, keys: Sequence[str], compute: Callable[[list[int]], torch.Tensor]
    ) -> torch.Tensor:
        """Rows for ``keys`` stacked along dim 0; ``compute(indices)`` encodes the missing
        ones in one batched call (duplicate keys in a batch are computed once)."""
        missing: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self.entries and key not in missing:
                missing[key] = i
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            rows = compute(list(missing.values())).detach()
            fresh = {key: row for key, row in zip(missing, rows, strict=True)}
        out = [fresh[k] if k in fresh else self._hit(k) for k in keys]
        self.misses += len(missing)
        for key, row in fresh.items():
            self._store(key, row)
        return torch.stack(out)

    def _hit(self, key: str) -> torch.Tensor:
        self.hits += 1
        self.entries.move_to_end(key)
        return self.entries[key]

    def _store(self, key: str, row: torch.Tensor) -> None:
        # A row may be a view of its batch: clone, or the whole batch stays alive.
        row = row.clone()
        self.entries[key] = row
        self.bytes += row.numel() * row.element_size()
        while self.bytes > self.max_bytes and self.entries:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


def build_encoding_cache(
    enabled: bool, text: TextConditioner, text_trains: bool, gib: float
) -> EncodingCache | None:
    """A cache of ``gib`` GiB (checked by the caller) when ``enabled``, refused where a
    cached output would be stale or random."""
    if not enabled:
        return None
    if text_trains:
        raise ConfigError(
            "cache_encodings keeps the text encoder's prompt states, but text_lr trains the "
            "text encoder, so every cached state would be stale after the next step. Freeze "
            "it (text_lr: null) or turn the cache off (cache_encodings: false)."
        )
    config = text.model.config
    dropout = {
        k: getattr(config, k, 0.0)
        for k in ("dropout", "attention_dropout", "hidden_dropout")
        if getattr(config, k, 0.0)
    }
    if dropout:
        raise ConfigError(
            f"cache_encodings needs a deterministic text encoder, but it applies dropout "
            f"{dropout}: its states change from call to call. Turn the cache off."
        )
    return EncodingCache(int(gib * 2**30))


def cached(
    cache: EncodingCache | None,
    kind: str,
    images: torch.Tensor,
    encode: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``encode(images)``, through ``cache`` when there is one."""
    if cache is None:
        return encode(images)
    return cache.lookup(content_keys(kind, images), lambda rows: encode(images[rows]))


def cached_prompts(cache: EncodingCache, text: TextConditioner, prompts: list[str]) -> torch.Tensor:
    """``text(prompts)``, each prompt's states computed once."""
    device = next(text.parameters()).device
    return cache.lookup(
        text_keys("text", prompts, device), lambda rows: text([prompts[i] for i in rows])
    )
