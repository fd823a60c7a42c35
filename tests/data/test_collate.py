"""Describing in the data path: the loaders' collate step, in the main process or in workers
(forked or spawned), and who writes the description cache from there."""

from __future__ import annotations

import json
import os
import pickle
from types import SimpleNamespace

import pytest
from torch.utils.data import DataLoader, default_collate

from dcgd.data.collate import DescribeCollate
from dcgd.data.datamodule import InpaintingDataModule
from dcgd.describe.base import LabelDescriber
from dcgd.describe.cache import CachedDescriber, global_rank


class CountingDescriber(LabelDescriber):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def describe(self, batch):
        self.calls += 1
        return super().describe(batch)


def small(**kwargs) -> InpaintingDataModule:
    settings = dict(size=32, batch_size=4, train_length=16, val_per_bucket=2, test_per_bucket=3)
    return InpaintingDataModule(**{**settings, "paste_probability": 0.5, **kwargs})


def _shards(cache_dir) -> list:
    return sorted(cache_dir.glob("*/shard-*.jsonl"))


def _keys(shards) -> list[str]:
    return sorted(json.loads(line)["key"] for s in shards for line in s.read_text().splitlines())


@pytest.mark.parametrize("workers", [0, 2])
def test_a_plain_loop_over_the_loaders_yields_described_batches(workers):
    dm = small(describer=LabelDescriber("a {}"), num_workers=workers, persistent_workers=False)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            want = LabelDescriber("a {}").describe(batch)
            assert batch["t_info"] == [d.t_info for d in want]
            assert batch["t_mask"] == [d.t_mask for d in want]
            assert all(batch["t_info"])  # every procedural scene has a label


def test_no_describer_leaves_batches_as_default_collate_makes_them():
    dm = small()
    dataset = dm.dataset("val")
    (batch, *_) = list(dm.val_dataloader())
    plain = default_collate([dataset[i] for i in range(4)])
    assert batch.keys() == plain.keys() and "t_info" not in batch


def test_the_loader_describes_and_the_hook_only_keeps_the_skipped_files():
    describer = CountingDescriber()
    dm = small(describer=describer)
    batch = next(iter(dm.val_dataloader()))
    assert describer.calls == 1 and "skipped" in batch
    out = dm.on_after_batch_transfer(batch, 0)
    assert describer.calls == 1 and "skipped" not in out  # described once, by the loader
    # A batch collated by hand is not described by the hook (describing is not a Lightning
    # matter); the collate step does it.
    dataset = dm.dataset("val")
    by_hand = dm.on_after_batch_transfer(default_collate([dataset[0], dataset[1]]), 0)
    assert describer.calls == 1 and "t_info" not in by_hand
    described = DescribeCollate(describer)([dataset[0], dataset[1]])
    assert describer.calls == 2 and len(described["t_info"]) == 2


def test_the_collate_step_pickles_with_its_describer_and_rank(tmp_path):
    collate = DescribeCollate(CachedDescriber(LabelDescriber(), str(tmp_path)), rank=3)
    copy = pickle.loads(pickle.dumps(collate))
    assert copy.rank == 3 and copy.describer.settings() == LabelDescriber().settings()


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_of_rank_zero_write_the_cache_and_other_ranks_do_not(
    tmp_path, monkeypatch, context
):
    """A worker acts as the rank the loader was built on, even where its own environment
    would say rank 0 (a spawned worker has no process group; Lightning sets no RANK)."""
    dataset = small().dataset("test")

    def run(cache_dir, rank: str) -> list:
        monkeypatch.setenv("RANK", rank)
        dm = small(describer=LabelDescriber(), description_cache=str(cache_dir), num_workers=2)
        collate = dm.val_dataloader().collate_fn  # built now, as rank `rank`
        assert isinstance(collate, DescribeCollate) and collate.rank == int(rank)
        monkeypatch.delenv("RANK")  # what the workers see: nothing, so rank 0 by default
        assert global_rank() == 0
        loader = DataLoader(
            dataset,
            batch_size=4,
            num_workers=2,
            collate_fn=collate,
            multiprocessing_context=context,
        )
        seen = [t for batch in loader for t in batch["t_mask"]]
        assert len(seen) == len(dataset)
        assert dm.describer.computed == 0  # described in the workers, not here
        return _shards(cache_dir)

    assert run(tmp_path / "rank1", "1") == []
    shards = run(tmp_path / "rank0", "0")
    # Every sample, written by the workers as they exited (fewer than a shard each), each
    # worker into files of its own; no temporary file left behind.
    assert len(_keys(shards)) == len(set(_keys(shards))) == len(dataset)
    assert str(os.getpid()) not in {s.name.split("-")[3] for s in shards}
    assert not list((tmp_path / "rank0").glob("*/*.tmp"))
    reader = CachedDescriber(LabelDescriber(), str(tmp_path / "rank0"), write="never")
    reader.describe(default_collate([dataset[i] for i in range(len(dataset))]))
    assert reader.computed == 0 and reader.hits == len(dataset)


def test_the_loaders_take_the_trainers_global_rank(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    dm = small(describer=LabelDescriber())
    assert dm.val_dataloader().collate_fn.rank == 0
    dm.trainer = SimpleNamespace(global_rank=3, world_size=4)  # what Lightning attaches
    assert dm.val_dataloader().collate_fn.rank == 3
