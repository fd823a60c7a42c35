"""Places365 (torchvision layout and easyformat), Paris StreetView, folders, built-in data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dcgd.data.datamodule import InpaintingDataModule
from dcgd.data.photos import PHOTOS, available_photos
from dcgd.data.sources import ImageFolder, ParisStreetView, Photos, Places365, Procedural
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
    # File-list order; ids are paths under data_256_standard/; categories by list index.
    assert loaded(train) == [(name.lstrip("/"), category) for name, _, category in PLACES_TRAIN]
    # Decoded as RGB: OpenCV's independent JPEG decoder (BGR) agrees up to IDCT rounding.
    reference = cv2.imread(str(train.paths[0]))[..., ::-1].astype(int)
    assert np.abs(train.load(0).image.astype(int) - reference).mean() < 1.0
    for split in ("val", "test"):
        val = Places365(places_torchvision, split)
        assert loaded(val) == [(name, category) for name, _, category in PLACES_VAL]


def test_places_large_images_are_read_from_their_own_folder(places_torchvision):
    with pytest.raises(DataError, match=r"data_large_standard.*places_small"):
        Places365(places_torchvision, "train", small=False)
    (places_torchvision / "data_256_standard").rename(places_torchvision / "data_large_standard")
    assert len(Places365(places_torchvision, "train", small=False)) == len(PLACES_TRAIN)


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
        assert sorted(loaded(Places365(folder, "train"))) == train
        assert sorted(loaded(Places365(folder, "val"))) == val


def test_places_bad_layouts_say_what_is_missing(places_torchvision, tmp_path):
    with pytest.raises(DataError, match="Places365 root .* does not exist"):
        Places365(tmp_path / "nowhere")
    (places_torchvision / "places365_val.txt").unlink()
    with pytest.raises(DataError, match=r"file list .*places365_val.txt is missing"):
        Places365(places_torchvision, "val")
    (places_torchvision / "places365_val.txt").write_text("Places365_val_00000001.jpg\n")
    with pytest.raises(DataError, match=r"places365_val.txt:1: cannot read"):
        Places365(places_torchvision, "val")
    (places_torchvision / "places365_val.txt").write_text("Places365_val_00000001.jpg 400\n")
    with pytest.raises(DataError, match=r"category index 0..364"):
        Places365(places_torchvision, "val")
    (places_torchvision / "places365_val.txt").write_text("\n")
    with pytest.raises(DataError, match="no images .* Places365"):
        Places365(places_torchvision, "val")
    (places_torchvision / "places365_val.txt").write_text("elsewhere/x.jpg 3\n")
    with pytest.raises(DataError, match=r"names .*x.jpg, which does not exist"):
        Places365(places_torchvision, "val")
    with pytest.raises(DataError, match="split must be train, val or test"):
        Places365(places_torchvision, "holdout")


def test_paris_streetview(paris):
    train = ParisStreetView(paris, "train")
    assert loaded(train) == [(name, "") for name in sorted(PARIS_TRAIN)]
    assert train.load(0).image.shape == (54, 94, 3)
    for split in ("val", "test"):
        assert loaded(ParisStreetView(paris, split)) == [(n, "") for n in PARIS_EVAL]
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
    assert len(dm.dataset("train").source) == 2
    assert dm.dataset("test").source.paths == dm.dataset("val").source.paths  # test falls back

    (split / "val" / "3.png").rename(split / "3.png")
    (split / "val").rmdir()
    with pytest.raises(DataError, match="is split .* but has no val/ sub-folder"):
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
