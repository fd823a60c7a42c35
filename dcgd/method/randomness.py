"""Noise as a function of the SAMPLE, not of where it sits: the one source of randomness.

Every random draw, in training (VAE posterior sample, diffusion noise, timestep, prompt
dropout: seeded by ``(seed, step, sample id)``) and in sampling (starting noise, a stochastic
sampler's step noise: ``(seed, sample id)``), comes from one CPU generator per sample. So a
sample gets the same draws whether it is in a batch of 4 on one process or a batch of 2 on
either of two DDP ranks, on a CPU or a GPU, and a resumed run draws what the uninterrupted
one did, with no RNG state to save. Draws also accept one generator for the whole batch
(for direct calls and tests).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

Generators = torch.Generator | list[torch.Generator] | None


def sample_seed(*parts: object) -> int:
    """A 63-bit seed from any values (hashed: no structure shared between nearby seeds)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def sample_generators(ids: Sequence[str], *key: object) -> list[torch.Generator]:
    """One CPU generator per sample id, seeded by ``(*key, id)``."""
    return [torch.Generator().manual_seed(sample_seed(*key, i)) for i in ids]


def sample_ids(batch: dict, where: str, rank: int = 0) -> list[str]:
    """The batch's sample ids; without them, positions on this rank (then a sample's noise
    depends on the rank and the batch layout: give ids for exact DDP equivalence)."""
    if batch.get("id") is not None:
        return [str(i) for i in batch["id"]]
    return [f"{where}/rank{rank}/{i}" for i in range(len(batch["source"]))]


def draw_normal(
    shape: Sequence[int], generator: Generators, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``randn`` of ``shape``; with a list of generators, row ``i`` from generator ``i``."""
    return randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)


def draw_integers(
    high: int, count: int, generator: Generators, device: torch.device
) -> torch.Tensor:
    """``count`` integers in ``[0, high)``, one per generator when given a list."""
    if isinstance(generator, list):
        draws = [torch.randint(0, high, (1,), generator=g) for g in generator]
        return torch.cat(draws).to(device)
    return torch.randint(
        0, high, (count,), generator=generator, device=_draw_device(generator, device)
    ).to(device)


def draw_uniform(count: int, generator: Generators, device: torch.device) -> torch.Tensor:
    """``count`` floats in ``[0, 1)``, one per generator when given a list."""
    if isinstance(generator, list):
        return torch.cat([torch.rand(1, generator=g) for g in generator]).to(device)
    return torch.rand(count, generator=generator, device=_draw_device(generator, device)).to(device)


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Draw where the generator lives (a CPU generator cannot fill a CUDA tensor)."""
    return generator.device if generator is not None else device


def initial_noise(
    shape: tuple[int, ...], ids: Sequence[str], seed: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The sampler's starting noise: one ``shape`` tensor per sample id, from its own
    generator (on the CPU, so that devices agree), stacked ``[B, *shape]``."""
    noise = [torch.randn(shape, generator=g) for g in sample_generators(ids, seed, "start")]
    return torch.stack(noise).to(device=device, dtype=dtype)
