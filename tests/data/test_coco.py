"""COCO-format cut-outs: filters, bad annotations, the crop cache, same-image duplication."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from dcgd.data import coco as coco_module  # noqa: E402
from dcgd.data.coco import CocoCutouts, same_image_pair  # noqa: E402
from dcgd.data.datamodule import InpaintingDataModule  # noqa: E402
from dcgd.errors import ConfigError, DataError  # noqa: E402
from tests.data.conftest import write_image  # noqa: E402

H, W = 64, 80
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "car"}]


def square(x: int, y: int, s: int) -> list[float]:
    return [x, y, x + s, y, x + s, y + s, x, y + s]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major mask, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def scene(seed: int) -> np.ndarray:
    """A smooth background with a red square (cat) at (10,10) and a blue disc (dog)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    image = np.stack([xx * 2, yy * 3, (xx + yy)], -1).astype(np.uint8) // 2
    image = (image + rng.integers(0, 20, (H, W, 3))).astype(np.uint8)
    image[10:26, 10:26] = (220, 30, 30)
    disc = (yy - 40) ** 2 + (xx - 55) ** 2 <= 8**2
    image[disc] = (30, 30, 220)
    return image


def dog_mask() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((yy - 40) ** 2 + (xx - 55) ** 2 <= 8**2).astype(np.uint8)


@pytest.fixture
def coco(tmp_path) -> tuple[Path, Path]:
    images = tmp_path / "train2017"
    write_image(images / "a.png", scene(0))
    write_image(images / "b.png", scene(1))
    # c.png is annotated but missing on disk.
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [square(10, 10, 16)]},
        {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": uncompressed_rle(dog_mask())},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed_rle(dog_mask())},
        {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[30, 5, 31, 5]]},
        {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [square(40, 2, 3)]},
        {"id": 6, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [square(0, 30, 12)]},
        {"id": 7, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": [square(35, 12, 10)]},
        {"id": 8, "image_id": 2, "category_id": 1, "iscrowd": 0, "segmentation": [square(10, 10, 16)]},
        {"id": 9, "image_id": 3, "category_id": 1, "iscrowd": 0, "segmentation": [square(10, 10, 16)]},
        {"id": 10, "image_id": 2, "category_id": 2, "iscrowd": 0, "segmentation": [[5, 5, 10, 5, 15, 5]]},
    ]  # fmt: skip
    data = {
        "images": [
            {"id": i, "file_name": f"{n}.png", "height": H, "width": W}
            for i, n in ((1, "a"), (2, "b"), (3, "c"))
        ],
        "annotations": anns,
        "categories": CATEGORIES,
    }
    annotations = tmp_path / "annotations" / "instances_train2017.json"
    annotations.parent.mkdir()
    annotations.write_text(json.dumps(data))
    return annotations, images


def test_filters_and_bad_annotations(coco, tmp_path):
    annotations, images = coco
    cutouts = CocoCutouts(annotations, images, categories=["cat", "dog"], min_area=20)
    # Kept: the cat (polygon) and dog (RLE) of a.png and the cat of b.png.
    assert sorted(i.id for i in cutouts.instances) == [1, 2, 8]
    assert dict(zip([i.id for i in cutouts.instances], cutouts.labels, strict=True)) == {
        1: "cat",
        2: "dog",
        8: "cat",
    }
    # crowd (3), too small (5), cut by the border (6), category not wanted (7)
    assert cutouts.filtered == {"crowd": 1, "small": 1, "border": 1, "category": 1}
    # degenerate polygon (4), missing image (9), zero area (10): skipped and reported
    bad = "\n".join(cutouts.bad)
    assert len(cutouts.bad) == 3
    assert "annotation 4: degenerate polygon" in bad
    assert "annotation 9: image" in bad and "c.png is missing" in bad
    assert "annotation 10: the object has zero area" in bad
    # No category filter: the car counts too.
    assert 7 in [i.id for i in CocoCutouts(annotations, images, min_area=20).instances]


def test_crops_are_the_objects_and_cached(coco, tmp_path, monkeypatch):
    annotations, images = coco
    cache = tmp_path / "cache"
    first = CocoCutouts(annotations, images, min_area=20, cache=cache)
    assert first.read_annotations
    k = [i.id for i in first.instances].index(2)
    rgba, label = first.load(k)
    assert label == "dog" and rgba.shape == (17, 17, 4)
    assert np.array_equal(rgba[..., 3] > 0, dog_mask()[32:49, 47:64] > 0)
    assert np.array_equal(rgba[8, 8, :3], [30, 30, 220])
    assert first.crop_path(k).is_file()

    # The second time: the index and the crop come from the cache, the JSON is not read,
    # the image is not decoded.
    def no_read(*args, **kwargs):
        raise AssertionError("annotations re-read")

    monkeypatch.setattr(coco_module, "_read_annotations", no_read)
    monkeypatch.setattr(coco_module, "load_rgb", no_read)
    second = CocoCutouts(annotations, images, min_area=20, cache=cache)
    assert not second.read_annotations and second.instances == first.instances
    again, _ = second.load(k)
    assert np.array_equal(again, rgba)
    # Other filters are another index.
    monkeypatch.undo()
    assert CocoCutouts(annotations, images, min_area=200, cache=cache).read_annotations


def test_same_image_pair_keeps_the_twin(coco):
    annotations, images = coco
    cutouts = CocoCutouts(annotations, images, categories=["cat", "dog"], min_area=20)
    image = scene(0)
    indices = cutouts.instances_of("sub/a.png")
    assert sorted(cutouts.instances[i].id for i in indices) == [1, 2]
    rng = np.random.default_rng(0)
    pairs = [same_image_pair(image, cutouts, indices, 48, rng) for _ in range(20)]
    pairs = [p for p in pairs if p is not None]
    assert len(pairs) >= 10
    for pair in pairs:
        assert pair.kind == "paste" and pair.object_label in ("cat", "dog")
        outside = pair.mask == 0
        assert np.array_equal(pair.source[outside], pair.target[outside])
        assert not np.array_equal(pair.source, pair.target)
        # The twin is in the target (the original image) and, untouched, in the source.
        x, y, w, h = pair.meta["twin"]
        box = (slice(max(y, 0), min(y + h, 48)), slice(max(x, 0), min(x + w, 48)))
        assert not pair.mask[box].any()
        assert np.array_equal(pair.source[box], pair.target[box])
        colour = (220, 30, 30) if pair.object_label == "cat" else (30, 30, 220)
        twin = pair.target[box].reshape(-1, 3).astype(int)
        assert (np.abs(twin - colour).sum(1) < 60).mean() > 0.3
        copy = pair.source[pair.hidden > 0].astype(int)
        assert (np.abs(copy - colour).sum(1) < 90).mean() > 0.5


def test_config_errors_are_one_line(coco, tmp_path):
    annotations, images = coco
    with pytest.raises(ConfigError, match="got keys coco, imgs"):
        InpaintingDataModule(
            dataset="folder", root=str(images), cutouts={"coco": annotations, "imgs": 1}
        )
    with pytest.raises(DataError, match="data.cutouts.coco .* does not exist"):
        InpaintingDataModule(
            dataset="folder", root=str(images), cutouts={"coco": "nope.json", "images": str(images)}
        )
    with pytest.raises(ConfigError, match="same_image_probability 0.5 .* set data.cutouts to"):
        InpaintingDataModule(same_image_probability=0.5)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(DataError, match="cannot be read"):
        CocoCutouts(broken, images)


def coco_datamodule(coco, **kwargs) -> InpaintingDataModule:
    from dcgd.describe.base import LabelDescriber

    annotations, images = coco
    settings = dict(
        dataset="folder",
        root=str(images),
        size=32,
        batch_size=2,
        paste_probability=1.0,
        same_image_probability=1.0,
        cutouts={
            "coco": str(annotations),
            "images": str(images),
            "categories": ["cat", "dog"],
            "min_area": 20,
        },
        val_per_bucket=1,
        test_per_bucket=1,
        buckets=["0.01-0.2"],
        describer=LabelDescriber(),
        persistent_workers=False,
    )
    return InpaintingDataModule(**{**settings, **kwargs})


def test_datamodule_same_image_pairs_and_bad_annotations_reported(coco, monkeypatch):
    made = []

    def spy(*args, **kwargs):
        pair = same_image_pair(*args, **kwargs)
        made.append(pair)
        return pair

    monkeypatch.setattr(coco_module, "same_image_pair", spy)
    dm = coco_datamodule(coco)
    dataset = dm.dataset("train")
    assert len(dm.skipped_files) == 3 and all("cut-out: " in s for s in dm.skipped_files)
    samples = [dataset[i] for i in range(6)]
    assert all(s["kind"] == "paste" and s["object_label"] in ("cat", "dog") for s in samples)
    for s in samples:
        outside = s["mask"].expand_as(s["source"]) == 0
        assert torch.equal(s["source"][outside], s["target"][outside])
    assert len([p for p in made if p is not None]) >= 4  # most pairs copy the image's own


def test_tiny_fit_on_coco_with_same_image_pairs(coco, tmp_path):
    import lightning as L

    from tests.training.tiny import tiny_module

    dm = coco_datamodule(coco, paste_probability=0.5, batch_size=1)
    seen = []

    class Batches(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(batch)

    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        callbacks=[Batches()],
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(tiny_module(), dm)
    assert trainer.global_step == 3
    kinds = [(k, m) for b in seen for k, m in zip(b["kind"], b["t_mask"], strict=True)]
    assert any(k == "paste" for k, _ in kinds)
    assert all(m in ("cat", "dog") for k, m in kinds if k == "paste")
