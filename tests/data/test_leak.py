"""The leak test of DESIGN.md §2: the ground truth the source does not show never reaches the
model.

Each sample's ``hidden`` marks the pixels whose target its source does not show: the whole
mask of a hole pair, the opaque object of a paste pair (the ring around the object and its
semi-transparent edge show the background, as a real photo does). Each test builds a split
twice: the second time, every image is changed inside the ``hidden`` pixels its sample gets
(and only there). ``target`` must change; the model's inputs (``source``, ``mask``, the
condition images of eq. 5) and the descriptions must not.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import torch
from torch.utils.data import default_collate

from dcgd.data.datamodule import InpaintingDataModule
from dcgd.describe.base import LabelDescriber, attach_descriptions
from dcgd.method.input import condition_images
from tests.data.conftest import random_image, write_image


class Tampering:
    """A source that passes another one through, scrambling each image inside a given mask.

    ``masks`` maps a source position to the mask of the sample that reads it; the scramble
    uses its own generator, so the sample's random stream is left untouched.
    """

    def __init__(self, inner, masks: dict[int, np.ndarray] | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.eval_crop = inner.eval_crop
        self.masks = masks or {}
        self.positions: list[int] = []

    def __len__(self) -> int:
        return len(self.inner)

    def load(self, position: int, rng=None):
        item = self.inner.load(position, rng)
        self.positions.append(position)
        if position in self.masks:
            noise = np.random.default_rng(position).integers(0, 256, item.image.shape, np.uint8)
            inside = self.masks[position][..., None].astype(bool)
            item.image = np.where(inside, noise, item.image)
        return item


def model_inputs(samples: list[dict]) -> dict:
    batch = attach_descriptions(default_collate(samples), LabelDescriber())
    return {
        "source": batch["source"],
        "mask": batch["mask"],
        **condition_images(batch["source"], batch["mask"]),
        "t_info": batch["t_info"],
        "t_mask": batch["t_mask"],
        "target": batch["target"],
        "hidden": batch["hidden"],
        "kind": batch["kind"],
    }


def assert_contract(batch: dict) -> None:
    """``hidden`` is a 0/1 map inside the mask: all of it for hole pairs, the object for pastes."""
    hidden, mask = batch["hidden"], batch["mask"]
    assert hidden.shape == mask.shape and set(hidden.unique().tolist()) <= {0.0, 1.0}
    assert not (hidden > mask).any()  # hidden ⊆ mask
    pastes = [i for i, kind in enumerate(batch["kind"]) if kind == "paste"]
    for i, kind in enumerate(batch["kind"]):
        if kind == "hole":
            assert torch.equal(hidden[i], mask[i])
        else:  # the opaque object, inside a footprint that also shows some background
            assert (mask[i] > hidden[i]).any()
    # A thin object scaled down to a few pixels may have no opaque pixel left; most do.
    assert sum(bool(hidden[i].any()) for i in pastes) > len(pastes) // 2


def assert_no_leak(before: dict, after: dict) -> None:
    assert {"hole", "paste"} <= set(before["kind"]), "both pair kinds must be exercised"
    assert_contract(before)
    inside = before["hidden"].expand_as(before["target"]).bool()
    # The change really happened, where the source hides the target and only there...
    assert not torch.equal(before["target"][inside], after["target"][inside])
    assert torch.equal(before["target"][~inside], after["target"][~inside])
    # ...and reached none of the model's inputs.
    for key in ("source", "mask", "hidden", "object", "context"):
        assert torch.equal(before[key], after[key]), key
    assert before["t_info"] == after["t_info"] and before["t_mask"] == after["t_mask"]


def run_twice(dm: InpaintingDataModule, split: str, region=None) -> tuple[dict, dict]:
    """The split built twice, the images scrambled the second time inside ``region(sample)``
    (by default, the sample's ``hidden`` pixels)."""
    region = region or (lambda sample: sample["hidden"][0].numpy())
    dataset = dm.dataset(split)
    tampering = Tampering(dataset.source)
    dataset.source = tampering
    first = [dataset[i] for i in range(len(dataset))]
    assert len(set(tampering.positions)) == len(first), "each image must serve one sample"
    tampering.masks = {p: region(s) for p, s in zip(tampering.positions, first, strict=True)}
    second = [dataset[i] for i in range(len(dataset))]
    return model_inputs(first), model_inputs(second)


def test_procedural_pairs_do_not_leak_the_target():
    # Procedural scenes: the labels come from the scene layout, so the describer is tested too.
    for split in ("train", "test"):
        dm = InpaintingDataModule(
            size=32, paste_probability=0.5, train_length=24, test_per_bucket=6, seed=3
        )
        assert_no_leak(*run_twice(dm, split))


def test_paste_sources_show_the_ring_as_a_photo_does():
    # The converse, for paste pairs: the background inside the mask but off the opaque object
    # (the dilation ring, the anti-aliased edge) is in the photo, so the source shows it.
    dm = InpaintingDataModule(size=32, paste_probability=0.5, test_per_bucket=6, seed=3)
    before, after = run_twice(dm, "test", lambda s: (s["mask"][0] - s["hidden"][0]).numpy())
    for i, kind in enumerate(before["kind"]):
        if kind == "hole":  # nothing of a hole pair's mask is shown
            assert torch.equal(before["source"][i], after["source"][i])
        else:
            assert not torch.equal(before["source"][i], after["source"][i])
    assert torch.equal(before["mask"], after["mask"])


def test_image_files_do_not_leak_the_target(tmp_path):
    # Real files on disk: the second folder holds the same images, scrambled inside the hidden
    # pixels of the test sample that reads them. Images are 32x32 PNGs, so the centre crop is exact.
    originals, tampered = tmp_path / "a", tmp_path / "b"
    for i in range(13):  # 06.png is the validation slice, which test leaves out: 12 images
        write_image(originals / f"{i:02d}.png", random_image(i, 32, 32))
    settings = dict(dataset="folder", size=32, paste_probability=0.5, test_per_bucket=3, seed=1)
    first = InpaintingDataModule(root=str(originals), **settings).dataset("test")
    samples = [first[i] for i in range(len(first))]
    shutil.copytree(originals, tampered)
    for sample in samples:
        name = sample["id"].rsplit("/", 1)[1]
        image = cv2.imread(str(tampered / name))
        noise = np.random.default_rng(7).integers(0, 256, image.shape, np.uint8)
        inside = sample["hidden"][0].numpy()[..., None].astype(bool)
        cv2.imwrite(str(tampered / name), np.where(inside, noise, image))
    second = InpaintingDataModule(root=str(tampered), **settings).dataset("test")
    assert len({s["id"] for s in samples}) == len(samples)  # one sample per image
    again = [second[i] for i in range(len(second))]
    assert [s["id"] for s in again] == [s["id"] for s in samples]
    assert_no_leak(model_inputs(samples), model_inputs(again))


def test_hole_pairs_show_no_object():
    # DESIGN.md §2: a hole pair has no object, so its object channel s∘o is exactly zero.
    dm = InpaintingDataModule(size=32, paste_probability=0.0, test_per_bucket=2)
    batch = default_collate([dm.dataset("test")[i] for i in range(8)])
    assert torch.count_nonzero(condition_images(batch["source"], batch["mask"])["object"]) == 0
    outside = batch["mask"].expand_as(batch["source"]) == 0
    assert torch.equal(batch["source"][outside], batch["target"][outside])
