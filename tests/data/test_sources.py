"""Places365 (torchvision layout and easyformat), Paris StreetView, folders, built-in data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dcgd.data.datamodule import InpaintingDataModule
from dcgd.data.photos import PHOTOS, available_photos
from dcgd.data.sources import (
    ImageFolder,
    ParisStreetView,
    Photos,
    Places365,
    Procedural,
    validation_slice,
)
from dcgd.errors import ConfigError, DataError
from tests.data.conftest import (
    PARIS_EVAL,
    PARIS_TRAIN,
    PLACES_TRAIN,
    PLACES_VAL,
    easyformat_folder,
    easyformat_val_folder,
    random_image,
    write_image,
)


def loaded(source) -> list[tuple[str, str]]:
    return [(source.load(i).id, source.load(i).category) for i in range(len(source))]


def test_places_torchvision_layout(places_torchvision):
    train = Places365(places_torchvision, "train")
    # File-list order (less the validation slice); ids are paths under data_256_standard/;
    # categories by list index.
    everything = [(name.lstrip("/"), category) for name, _, category in PLACES_TRAIN]
    assert loaded(train) == [entry for entry in everything if entry in loaded(train)]
    assert len(train) == len(everything) - 1
    # Decoded as RGB: OpenCV's independent JPEG decoder (BGR) agrees up to IDCT rounding.
    reference = cv2.imread(str(train.paths[0]))[..., ::-1].astype(int)
    assert np.abs(train.load(0).image.astype(int) - reference).mean() < 1.0
    test = Places365(places_torchvision, "test")
    assert loaded(test) == [(name, category) for name, _, category in PLACES_VAL]
    # Validation: a slice of the training images, which training leaves out.
    val = Places365(places_torchvision, "val")
    assert len(val) == 1 and sorted(loaded(val) + loaded(train)) == sorted(everything)


def test_places_large_images_are_read_from_their_own_folder(places_torchvision):
    with pytest.raises(DataError, match=r"data_large_standard.*places_small"):
        Places365(places_torchvision, "train", small=False)
    (places_torchvision / "data_256_standard").rename(places_torchvision / "data_large_standard")
    assert len(Places365(places_torchvision, "train", small=False)) == len(PLACES_TRAIN) - 1


def test_places_easyformat(places_easyformat):
    root, nested = places_easyformat
    train = sorted(
        (f"{easyformat_folder(name, nested)}/{Path(name).name}", category)
        for name, _, category in PLACES_TRAIN
    )
    val = sorted(
        (f"{easyformat_val_folder(index, nested)}/{name}", category)
        for name, index, category in PLACES_VAL
    )
    # root may be the folder holding places365_standard/, or places365_standard itself.
    for folder in (root, root / "places365_standard"):
        carved = loaded(Places365(folder, "train")) + loaded(Places365(folder, "val"))
        assert sorted(carved) == train
        assert sorted(loaded(Places365(folder, "test"))) == val


def test_places_bad_layouts_say_what_is_missing(places_torchvision, tmp_path):
    with pytest.raises(DataError, match="Places365 root .* does not exist"):
        Places365(tmp_path / "nowhere")
    (places_torchvision / "places365_val.txt").unlink()
    with pytest.raises(DataError, match=r"file list .*places365_val.txt is missing"):
        Places365(places_torchvision, "test")
    (places_torchvision / "places365_val.txt").write_text("Places365_val_00000001.jpg\n")
    with pytest.raises(DataError, match=r"places365_val.txt:1: cannot read"):
        Places365(places_torchvision, "test")
    (places_torchvision / "places365_val.txt").write_text("Places365_val_00000001.jpg 400\n")
    with pytest.raises(DataError, match=r"category index 0..364"):
        Places365(places_torchvision, "test")
    (places_torchvision / "places365_val.txt").write_text("\n")
    with pytest.raises(DataError, match="no images .* Places365"):
        Places365(places_torchvision, "test")
    (places_torchvision / "places365_val.txt").write_text("elsewhere/x.jpg 3\n")
    with pytest.raises(DataError, match=r"names .*x.jpg, which does not exist"):
        Places365(places_torchvision, "test")
    with pytest.raises(DataError, match="split must be train, val or test"):
        Places365(places_torchvision, "holdout")


def test_paris_streetview(paris):
    train = ParisStreetView(paris, "train")
    assert len(train) == len(PARIS_TRAIN) - 1  # less the validation slice
    assert train.load(0).image.shape == (54, 94, 3)
    assert loaded(ParisStreetView(paris, "test")) == [(n, "") for n in PARIS_EVAL]
    # Validation is carved from paris_train_original/, never paris_eval_gt/.
    val = ParisStreetView(paris, "val")
    assert len(val) == len(train) == 1 and val.paths[0] not in train.paths
    assert sorted(loaded(val) + loaded(train)) == [(name, "") for name in sorted(PARIS_TRAIN)]
    with pytest.raises(DataError, match="paris_train_original/ and .*paris_eval_gt/"):
        ParisStreetView(paris / "paris_eval_gt", "train")


def test_image_folder_splits(tmp_path):
    flat = tmp_path / "flat"
    for name in ("b.png", "a/c.jpg", "notes.txt"):
        if name.endswith("txt"):
            (flat / name).write_text("not an image")
        else:
            write_image(flat / name, random_image(0, 8, 8))
    assert [s.item_id(i) for s in [ImageFolder(flat)] for i in range(2)] == ["a/c.jpg", "b.png"]

    split = tmp_path / "split"
    for name in ("train/1.png", "train/2.png", "val/3.png"):
        write_image(split / name, random_image(0, 8, 8))
    dm = InpaintingDataModule(dataset="folder", root=str(split), size=8, paste_probability=0)
    train, val = dm.dataset("train").source.paths, dm.dataset("val").source.paths
    assert len(train) == len(val) == 1  # val carved from train/
    assert sorted(train + val) == [split / "train/1.png", split / "train/2.png"]
    assert dm.dataset("test").source.paths == [split / "val/3.png"]  # test falls back to val/

    (split / "val" / "3.png").rename(split / "3.png")
    (split / "val").rmdir()
    with pytest.raises(DataError, match="is split .* but has no test/ or val/ sub-folder"):
        InpaintingDataModule(dataset="folder", root=str(split), size=8).dataset("test")
    (split / "train" / "2.png").unlink()
    with pytest.raises(DataError, match="has 1 image.*carved from the training images"):
        InpaintingDataModule(dataset="folder", root=str(split), size=8).dataset("val")


def test_missing_and_empty_roots(tmp_path):
    with pytest.raises(DataError, match="data root .* does not exist"):
        InpaintingDataModule(dataset="places365", root=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="needs data.root"):
        InpaintingDataModule(dataset="paris")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images .* under"):
        InpaintingDataModule(dataset="folder", root=str(tmp_path / "empty")).dataset("train")
    with pytest.raises(ConfigError, match="must be one of"):
        InpaintingDataModule(dataset="imagenet")


def test_built_in_sources():
    procedural = Procedural(32, length=5)
    item = procedural.load(3, np.random.default_rng(0))
    assert item.image.shape == (32, 32, 3) and item.fixed_size and item.scene is not None
    assert item.category == item.scene.scene
    assert available_photos() == list(PHOTOS)  # all eight ship inside the installed packages
    photos = Photos(length=10)
    first, ninth = photos.load(0), photos.load(8)
    assert first.image.dtype == np.uint8 and first.image.shape[2] == 3
    assert np.array_equal(first.image, ninth.image) and first.id != ninth.id
    with pytest.raises(DataError, match="unknown built-in photos"):
        Photos(names=["mona lisa"])


# ------------------------------------------------------------------ splits
PINNED_FIRST_VAL_IDS = ["a/b/00000264.jpg", "a/b/00000274.jpg"]


def _folder_fixture(root: Path, layout: str) -> Path:
    names = {
        "unsplit": [f"{i}.png" for i in range(6)],
        "train+val": [f"train/{i}.png" for i in range(5)] + ["val/a.png", "val/b.png"],
        "train+val+test": [f"train/{i}.png" for i in range(5)] + ["val/a.png", "test/t.png"],
    }[layout]
    for i, name in enumerate(names):
        write_image(root / name, random_image(i, 8, 8))
    return root


@pytest.fixture(
    params=[
        "places-torchvision",
        "places-easyformat",
        "paris",
        "folder-unsplit",
        "folder-train+val",
        "folder-train+val+test",
    ]
)
def dataset_root(request, tmp_path) -> tuple[str, Path]:
    kind = request.param
    if kind == "places-torchvision":
        return "places365", request.getfixturevalue("places_torchvision")
    if kind == "places-easyformat":
        root = tmp_path / "easy" / "places365_standard"
        for i, (name, _, _) in enumerate(PLACES_TRAIN):
            folder = root / "train" / easyformat_folder(name, False)
            write_image(folder / Path(name).name, random_image(i))
        for i, (name, index, _) in enumerate(PLACES_VAL):
            folder = root / "val" / easyformat_val_folder(index, False)
            write_image(folder / name, random_image(100 + i))
        return "places365", root.parent
    if kind == "paris":
        return "paris", request.getfixturevalue("paris")
    return "folder", _folder_fixture(tmp_path / "folder", kind.removeprefix("folder-"))


def test_validation_never_shares_an_image_with_test(dataset_root):
    dataset, root = dataset_root
    dm = InpaintingDataModule(dataset=dataset, root=str(root), size=8, paste_probability=0)
    files = {
        split: {p.resolve() for p in dm.dataset(split).source.paths}
        for split in ("train", "val", "test")
    }
    assert files["val"] and files["train"] and files["test"]
    assert not files["val"] & files["test"]
    assert not files["val"] & files["train"]  # carved out of training
    if dataset != "folder" or (root / "test").is_dir() or (root / "val").is_dir():
        assert not files["train"] & files["test"]  # a held-out test set
    # The slice is a function of each image's id alone: the file order does not matter.
    source = dm.dataset("val").source
    ids = [source.item_id(i) for i in range(len(source))]
    train = dm.dataset("train").source
    everything = ids + [train.item_id(i) for i in range(len(train))]
    reordered = validation_slice(everything[::-1])[::-1]
    assert reordered == validation_slice(everything)
    assert sum(validation_slice(everything)) >= 1


def test_the_validation_slice_is_fixed_and_about_one_percent():
    ids = [f"a/b/{i:08d}.jpg" for i in range(20000)]
    chosen = validation_slice(ids)
    assert 150 < sum(chosen) < 250  # ~1%
    # Pinned: the same on every machine and Python (sha256, not hash()).
    assert [i for i, c in zip(ids, chosen, strict=True) if c][:2] == PINNED_FIRST_VAL_IDS
    assert validation_slice(ids[:5000]) == chosen[:5000]  # membership per image


def test_procedural_splits_draw_different_scenes():
    dm = InpaintingDataModule(size=32, train_length=8, val_per_bucket=2, test_per_bucket=2)
    images = {
        split: {dm.dataset(split)[i]["target"].numpy().tobytes() for i in range(8)}
        for split in ("train", "val", "test")
    }
    assert len(images["val"]) == len(images["test"]) == 8
    assert not images["val"] & images["test"]
    assert not images["val"] & images["train"] and not images["test"] & images["train"]
