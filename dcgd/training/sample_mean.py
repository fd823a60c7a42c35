"""Validation means over SAMPLES, exact under DDP.

Two things go wrong when each rank averages its own batches: ranks with fewer samples weigh
as much as full ones, and Lightning's ``DistributedSampler`` pads the evaluation set to a
multiple of the world size by repeating samples, which are then counted twice.
:class:`SampleMean` keeps one value per sample id, gathers them from every rank (torchmetrics
sync) and averages each id once, so 2 ranks give what 1 process gives on the same set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torchmetrics import Metric


def id_keys(ids: Sequence[str], device: torch.device) -> torch.Tensor:
    """A 63-bit integer per sample id (tensors gather across ranks; strings do not)."""
    keys = [
        int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little") >> 1
        for i in ids
    ]
    return torch.tensor(keys, dtype=torch.long, device=device)


class SampleMean(Metric):
    """Mean of per-sample values, each sample id counted once over all ranks."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("keys", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, values: torch.Tensor, keys: torch.Tensor) -> None:
        self.values.append(values.detach().float().reshape(-1))
        self.keys.append(keys.reshape(-1))

    def compute(self) -> torch.Tensor:
        values, keys = self.values, self.keys
        # After a sync the states are already concatenated tensors; before it, lists.
        values = torch.cat(values) if isinstance(values, list) else values
        keys = torch.cat(keys) if isinstance(keys, list) else keys
        if values.numel() == 0:
            return torch.tensor(float("nan"), device=self.device)
        return values[first_occurrences(keys)].mean()


def first_occurrences(keys: torch.Tensor) -> torch.Tensor:
    """The index of each distinct key's first occurrence (a repeated sample scores the
    same on every rank: its noise is seeded by its id)."""
    unique, inverse = torch.unique(keys, return_inverse=True)
    positions = torch.arange(len(keys), device=keys.device)
    first = torch.full((len(unique),), len(keys), dtype=torch.long, device=keys.device)
    return first.scatter_reduce(0, inverse, positions, reduce="amin")
