"""``dataset: pairs``: real removal pairs (source with the object, mask, clean target) read
aligned for test and val, bad pairs skipped and counted, fit refused, and the Table-1 test
loop's numbers equal to a direct computation on the pairs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from dcgd.data.buckets import mask_bucket
from dcgd.data.datamodule import InpaintingDataModule
from dcgd.errors import ConfigError, DataError
from dcgd.eval.metrics import mae, psnr
from dcgd.eval.table_callback import TableOneCallback
from dcgd.method.input import composite
from tests.data.conftest import write_image
from tests.eval.helpers import table_trainer

H, W = 64, 80  # sized so that a 32 px working size is an exact 2x2 area downscale


def make_pairs(root: Path, count: int = 6, seed: int = 0) -> dict[str, tuple]:
    """``count`` synthetic scenes: target = a smooth background, source = the target with a
    drawn object inside the mask (a rectangle on even coordinates: exact at 2x downscale)."""
    rng = np.random.default_rng(seed)
    scenes = {}
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(count):
        base = rng.integers(30, 220, 3)
        target = np.clip(base + 0.5 * yy[..., None] - 0.3 * xx[..., None], 0, 255).astype(np.uint8)
        mask = np.zeros((H, W), np.uint8)
        side = 12 + 4 * i  # different mask ratios: several buckets
        y, x = (
            2 * int(rng.integers(4, (H - side) // 2 - 2)),
            2 * int(rng.integers(8, (W - side) // 2 - 6)),
        )
        mask[y : y + side, x : x + side] = 1
        source = target.copy()
        source[mask > 0] = rng.integers(0, 256, 3).astype(np.uint8)  # the object
        name = f"scene{i}" if i % 2 else f"sub/scene{i}"
        write_image(root / "source" / f"{name}.png", source)
        write_image(root / "target" / f"{name}.png", target)
        write_image(root / "mask" / f"{name}.png", mask * 255)
        scenes[name] = (source, mask, target)
    return scenes


def pairs_module(root: Path, **kwargs) -> InpaintingDataModule:
    return InpaintingDataModule(dataset="pairs", root=str(root), size=32, batch_size=4, **kwargs)


def test_test_split_yields_the_real_pairs_aligned(tmp_path):
    scenes = make_pairs(tmp_path)
    dm = pairs_module(tmp_path)
    dm.setup("test")
    samples = [s for b in dm.test_dataloader() for s in _split(b)]
    assert len(samples) == len(scenes) and dm.skipped_files == []
    for sample in samples:
        name = sample["id"].split("/", 2)[2]
        source, mask, target = scenes[name]
        small = mask.reshape(32, 2, 40, 2).max(axis=(1, 3))[:, 4:36]  # the 2x area + centre crop
        assert torch.equal(sample["mask"][0], torch.from_numpy(small).float())
        assert torch.equal(sample["hidden"], sample["mask"])
        assert sample["kind"] == "paste"
        # The source is the real photo WITH the object (not target*(1-mask)): it differs from
        # the target under the mask, and only there.
        differs = (sample["source"] != sample["target"]).any(dim=0)
        assert differs.any()
        assert torch.equal(differs, sample["mask"][0] > 0)
        assert (sample["source"][:, sample["mask"][0] > 0] != 0).any()
        assert sample["mask_ratio"] == pytest.approx(small.mean())
        assert sample["bucket"] == mask_bucket(sample["mask"][None])[0]
    assert len({int(s["bucket"]) for s in samples}) >= 2


def _split(batch: dict) -> list[dict]:
    n = batch["source"].shape[0]
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def test_bad_pairs_are_skipped_and_counted(tmp_path, capfd):
    scenes = make_pairs(tmp_path, count=5)
    (tmp_path / "target" / "scene1.png").unlink()  # missing target
    (tmp_path / "mask" / "scene3.png").unlink()  # missing mask
    (tmp_path / "source" / "sub" / "scene4.png").write_bytes(b"not a png")  # unreadable
    big = np.zeros((H + 2, W, 3), np.uint8)
    write_image(tmp_path / "target" / "sub" / "scene2.png", big)  # size mismatch
    write_image(tmp_path / "target" / "orphan.png", big)  # a target with no source
    dm = pairs_module(tmp_path)
    dataset = dm.dataset("test")
    assert [p.key for p in dataset.pairs] == ["sub/scene0"]
    assert len(dm.skipped_files) == 5, dm.skipped_files
    joined = "\n".join(dm.skipped_files)
    for needle in (
        "scene1: no target",
        "scene3: no mask",
        "sub/scene4: unreadable",
        "sub/scene2: sizes differ",
        "orphan: no source",
    ):
        assert needle in joined
    assert len(scenes) == 5
    # Nothing usable: one line saying what is wrong.
    (tmp_path / "mask" / "sub" / "scene0.png").unlink()
    with pytest.raises(DataError, match="no usable removal pair") as err:
        pairs_module(tmp_path).dataset("test")
    assert "\n" not in str(err.value)


def test_fit_is_refused_and_val_needs_its_own_folder(tmp_path):
    make_pairs(tmp_path, count=2)
    dm = pairs_module(tmp_path)
    with pytest.raises(ConfigError, match="for evaluation"):
        dm.setup("fit")
    with pytest.raises(DataError, match="no val/"):
        dm.dataset("val")
    split = tmp_path / "split"
    make_pairs(split / "val", count=2, seed=1)
    make_pairs(split / "test", count=3, seed=2)
    dm = pairs_module(split)
    assert len(dm.dataset("val")) == 2 and len(dm.dataset("test")) == 3
    with pytest.raises(ConfigError, match="data.root"):
        InpaintingDataModule(dataset="pairs")


class Blur(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def test_step(self, batch, batch_idx):
        return {"result": torch.nn.functional.avg_pool2d(batch["source"], 5, 1, 2)}


def test_lightning_test_loop_on_pairs_matches_a_direct_computation(tmp_path):
    make_pairs(tmp_path / "pairs")
    dm = pairs_module(tmp_path / "pairs")
    callback = TableOneCallback(baselines=[], lpips=[])
    table_trainer(callback, tmp_path).test(Blur(), datamodule=dm)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "eval" / "per_image.csv").read_text())))
    dataset = dm.dataset("test")
    assert len(rows) == len(dataset)
    by_id = {dataset[i]["id"]: dataset[i] for i in range(len(dataset))}
    maes = []
    for row in rows:
        s = by_id[row["id"]]
        source, mask, target = s["source"][None], s["mask"][None], s["target"][None]
        pred = torch.nn.functional.avg_pool2d(source, 5, 1, 2)
        result = composite(pred, source, mask)
        # Independently: MAE on [0,1] by hand, PSNR through the metric.
        by_hand = float(((result - target).abs() / 2).mean())
        assert float(row["mae"]) == pytest.approx(by_hand, abs=1e-6)
        assert float(row["psnr"]) == pytest.approx(float(psnr(result, target)[0]), abs=1e-4)
        assert float(mae(result, target)[0]) == pytest.approx(by_hand, abs=1e-6)
        maes.append(by_hand)
    assert callback.results["model"]["mae"]["all"] == pytest.approx(np.mean(maes), abs=1e-6)
