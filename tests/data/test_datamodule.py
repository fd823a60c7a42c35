"""InpaintingDataModule: the batch contract, determinism, DDP shards, resuming, bad files."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, DistributedSampler

from dcgd.data.buckets import PAPER_BUCKETS, mask_bucket
from dcgd.data.datamodule import EpochSampler, InpaintingDataModule
from dcgd.data.masks import eval_mask
from dcgd.errors import ConfigError, DataError
from tests.data.conftest import random_image, write_image


def small(**kwargs) -> InpaintingDataModule:
    settings = dict(size=32, batch_size=4, train_length=16, val_per_bucket=2, test_per_bucket=3)
    return InpaintingDataModule(**{**settings, **kwargs})


def batches(loader) -> list[dict]:
    return list(loader)


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


def test_batches_follow_the_contract():
    dm = small(paste_probability=0.5)
    dm.setup("fit")
    for batch in (next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))):
        b = 4
        assert batch["source"].shape == batch["target"].shape == (b, 3, 32, 32)
        assert batch["mask"].shape == (b, 1, 32, 32)
        for key in ("source", "target", "mask"):
            assert batch[key].dtype == torch.float32
        assert batch["source"].min() >= -1 and batch["source"].max() <= 1
        assert batch["target"].min() >= -1 and batch["target"].max() <= 1
        assert set(batch["mask"].unique().tolist()) == {0.0, 1.0}
        assert torch.allclose(batch["mask_ratio"], batch["mask"].mean(dim=(1, 2, 3)))
        assert torch.equal(batch["bucket"], mask_bucket(batch["mask"]))
        assert (batch["bucket"] >= 0).all()
        assert len(batch["id"]) == len(set(batch["id"])) == b
        assert set(batch["kind"]) <= {"hole", "paste"}
        assert all(isinstance(batch[k][0], str) for k in ("object_label", "scene_label"))
        # Outside the mask the source is the target, whatever the pair kind.
        outside = batch["mask"].expand_as(batch["source"]) == 0
        assert torch.equal(batch["source"][outside], batch["target"][outside])


def test_eval_samples_cycle_through_the_buckets():
    dataset = small(paste_probability=0.5).dataset("test")
    assert len(dataset) == 3 * len(PAPER_BUCKETS)
    assert [int(dataset[i]["bucket"]) for i in range(len(dataset))] == [0, 1, 2, 3] * 3


def test_batches_are_identical_across_runs_and_worker_counts():
    # Eval sets are a pure function of the seed; training batches too, given the epoch.
    runs = []
    for workers in (0, 2, 0):
        dm = small(paste_probability=0.5, num_workers=workers, persistent_workers=False)
        dm.setup("fit")
        dm.setup("test")
        runs.append(
            [batches(dm.val_dataloader()), batches(dm.test_dataloader())]
            + [batches(dm.train_dataloader())]
        )
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert_same_batches(a, b)
    # A different seed gives a different evaluation set.
    dm = small(paste_probability=0.5, seed=1)
    assert not torch.equal(dm.dataset("test")[0]["mask"], runs[0][1][0]["mask"][0])


def test_eval_set_is_the_same_for_any_world_size():
    dataset = small(paste_probability=0.5).dataset("val")
    whole = {dataset[i]["id"]: dataset[i] for i in range(len(dataset))}
    for world in (2, 3):
        seen = {}
        # The sampler Lightning puts on evaluation loaders under DDP.
        for rank in range(world):
            sampler = DistributedSampler(dataset, world, rank, shuffle=False)
            for batch in DataLoader(dataset, batch_size=2, sampler=sampler):
                for j, key in enumerate(batch["id"]):
                    seen[key] = batch["mask"][j]
        assert seen.keys() == whole.keys()
        assert all(torch.equal(seen[k], whole[k]["mask"]) for k in whole)


def test_epoch_sampler_gives_each_rank_a_disjoint_shard():
    dataset = list(range(10))
    for world in (1, 2, 3):
        shards = [EpochSampler(dataset, world, rank, seed=0) for rank in range(world)]
        for epoch in (0, 1):
            for sampler in shards:
                sampler.set_epoch(epoch)
            drawn = [list(sampler) for sampler in shards]
            assert all(len(d) == len(drawn[0]) == 10 // world for d in drawn)
            flat = [i for d in drawn for i in d]
            assert len(set(flat)) == len(flat)  # disjoint
            # Virtual indices epoch * len + i: the dataset draws new pairs every epoch.
            assert all(epoch * 10 <= i < (epoch + 1) * 10 for i in flat)
    one = EpochSampler(dataset, 1, 0, seed=0)
    first = list(one)
    one.set_epoch(1)
    assert [i - 10 for i in one] != first  # a new order each epoch
    assert list(EpochSampler(dataset, 1, 0, seed=1)) != first


def test_epoch_sampler_skip_resumes_inside_its_epoch_only():
    dataset = list(range(12))
    full = EpochSampler(dataset, 2, 1, seed=4)
    full.set_epoch(3)
    resumed = EpochSampler(dataset, 2, 1, seed=4, skip=4, skip_epoch=3)
    resumed.set_epoch(3)
    assert list(resumed) == list(full)[4:]
    assert len(resumed) == len(full)  # Lightning counts the resumed epoch from where it stopped
    resumed.set_epoch(4)
    full.set_epoch(4)
    assert list(resumed) == list(full)


def test_constructor_errors():
    with pytest.raises(ConfigError, match="multiple of 8"):
        InpaintingDataModule(size=30)
    with pytest.raises(ConfigError, match="paste_probability"):
        InpaintingDataModule(paste_probability=1.5)
    with pytest.raises(ConfigError, match="LO-HI"):
        InpaintingDataModule(buckets=["0.4-0.3"])
    with pytest.raises(ConfigError, match="mask kind"):
        InpaintingDataModule(mask_kind="blobs")
    with pytest.raises(ConfigError, match="seed must be at least 0"):
        InpaintingDataModule(seed=-1)
    with pytest.raises(ConfigError, match="limit_val_batches"):
        InpaintingDataModule(val_per_bucket=0)
    for dataset in ("places365", "paris", "folder"):
        # A removal mix on real photos needs objects to paste: refused, not trained hole-only.
        with pytest.raises(ConfigError, match=r"needs a cut-out source: set data.cutouts"):
            InpaintingDataModule(dataset, root=".", paste_probability=0.5, cutouts=None)
        with pytest.raises(DataError, match=r"data.cutouts /nowhere does not exist"):
            InpaintingDataModule(dataset, root=".", paste_probability=0.5, cutouts="/nowhere")
        InpaintingDataModule(dataset, root=".", paste_probability=0.0, cutouts=None)
    InpaintingDataModule(paste_probability=0.5, cutouts=None)  # built-in data: its own objects
    dm = small(train_length=3)
    dm.setup("fit")
    with pytest.raises(DataError, match="fewer than one global batch"):
        dm.train_dataloader()


def test_mask_folder_masks_are_used_for_holes(tmp_path):
    for i, c in enumerate((3, 6, 8, 12)):  # 0.09, 0.19, 0.25, 0.38 of a 32-wide mask
        mask = np.zeros((32, 32), np.uint8)
        mask[:, :c] = 255
        write_image(tmp_path / f"{i}.png", mask)
    dm = small(paste_probability=0.0, mask_folder=str(tmp_path))
    dataset = dm.dataset("test")
    for i in range(len(dataset)):
        columns = dataset[i]["mask"][0].sum(dim=0)
        assert set(columns.unique().tolist()) == {0.0, 32.0}  # whole columns: a folder mask
    dm = small(paste_probability=0.0, mask_folder=str(tmp_path), buckets=["0.4-0.5"])
    with pytest.raises(DataError, match="no mask in bucket"):
        dm.dataset("test")


def test_hole_masks_of_the_test_split_are_the_eval_masks():
    dataset = small(paste_probability=0.0).dataset("test")
    for i in range(len(dataset)):
        k, b = divmod(i, len(PAPER_BUCKETS))
        expected = eval_mask(k, 0, (32, 32), PAPER_BUCKETS[b], split=0)
        assert np.array_equal(dataset[i]["mask"][0].numpy(), expected)


# ------------------------------------------------------------------ with a real Trainer
class Recorder(L.LightningModule):
    """The smallest module that trains: it records which samples it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []

    def training_step(self, batch, batch_idx):
        self.seen += batch["id"]
        return ((self.weight - batch["target"].mean()) ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    settings = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**settings, **kwargs})


@pytest.mark.parametrize("stop", ["max_epochs", "max_steps"])
def test_a_resumed_run_sees_exactly_the_samples_of_an_uninterrupted_one(tmp_path, stop):
    # 16 samples, batches of 4: 4 steps an epoch. Checkpoints after steps 2 (mid-epoch),
    # 4 (the last batch of epoch 0, saved in on_train_batch_end) and at the end of epoch 0.
    limit = {"max_epochs": 3} if stop == "max_epochs" else {"max_steps": 12}
    every_step = ModelCheckpoint(tmp_path / "steps", "{step}", every_n_train_steps=1, save_top_k=-1)
    epoch_end = ModelCheckpoint(
        tmp_path / "epochs", "{epoch}", save_top_k=-1, save_on_train_epoch_end=True
    )
    full = Recorder()
    trainer(tmp_path, callbacks=[every_step, epoch_end], **limit).fit(
        full, datamodule=small(paste_probability=0.5)
    )
    assert len(full.seen) == 12 * 4 and len(set(full.seen)) == len(full.seen)
    resume_from = [("steps/step=2.ckpt", 2), ("steps/step=4.ckpt", 4), ("steps/step=6.ckpt", 6)]
    if stop == "max_epochs":
        # (With max_steps, Lightning 2.6 itself runs a single batch of the epoch after an
        # end-of-epoch checkpoint: its batch progress is not reset, whatever the data.)
        resume_from.append(("epochs/epoch=0.ckpt", 4))
    for name, done in resume_from:
        checkpoint = tmp_path / name
        resumed = Recorder()
        trainer(tmp_path, **limit).fit(
            resumed, datamodule=small(paste_probability=0.5), ckpt_path=checkpoint
        )
        assert resumed.seen == full.seen[done * 4 :], checkpoint.name


def test_training_skips_and_reports_a_corrupt_file(tmp_path, capfd):
    for i in range(9):  # 0.png is the validation slice: 8 training images
        write_image(tmp_path / "images" / f"{i}.png", random_image(i, 32, 32))
    (tmp_path / "images" / "3.png").write_bytes(b"\x89PNG broken")
    dm = InpaintingDataModule(
        dataset="folder",
        root=str(tmp_path / "images"),
        size=32,
        batch_size=4,
        paste_probability=0.5,
        val_per_bucket=1,
    )
    module = Recorder()
    fit = trainer(tmp_path, max_epochs=2, logger=L.pytorch.loggers.CSVLogger(tmp_path))
    fit.fit(module, datamodule=dm)
    assert len(module.seen) == 16  # nothing lost: the next image stands in
    err = capfd.readouterr().err
    assert err.count("skipped 1 unreadable image(s) in epoch") == 2
    assert "3.png" in err and "cannot decode image" in err
    assert fit.callback_metrics["data/skipped_files"] == 2  # counted over the run
