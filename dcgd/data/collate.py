"""The collate step of the data module's loaders: stack the samples, then describe them.

It runs where the batch is made: in a DataLoader worker when ``num_workers > 0`` (forked or
spawned), else in the main process; either way on the CPU, before the batch is moved to the
model's device. So any plain loop over a loader of the data module gets described batches,
with or without Lightning.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import default_collate

from dcgd.describe.base import Describer, attach_descriptions
from dcgd.describe.cache import acting_rank


class DescribeCollate:
    """``default_collate``, then the describer's ``t_info`` / ``t_mask``.

    A class, not a closure, so that spawned workers can unpickle it. ``rank`` is the global
    rank of the process that built the loader: a worker cannot always tell it (no process
    group when spawned, no ``RANK`` under Lightning's launchers), and the description cache
    lets only global rank 0 write.
    """

    def __init__(self, describer: Describer | None, rank: int = 0) -> None:
        self.describer = describer
        self.rank = int(rank)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = default_collate(samples)
        if self.describer is None:
            return batch
        with acting_rank(self.rank):
            return attach_descriptions(batch, self.describer)
