"""Object cut-outs: RGBA folders, images with instance masks, the built-in objects."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dcgd.data.cutouts import CutoutFolder, InstanceMaskCutouts, ProceduralCutouts, build_cutouts
from dcgd.data.datamodule import InpaintingDataModule
from dcgd.data.procedural import OBJECT_NAMES
from dcgd.errors import DataError
from tests.data.conftest import random_image, write_image


def rgba_object(seed: int, h: int = 12, w: int = 10) -> np.ndarray:
    rgba = np.zeros((h + 4, w + 6, 4), np.uint8)  # a transparent margin around the object
    rgba[2 : 2 + h, 3 : 3 + w, :3] = random_image(seed, h, w)
    rgba[2 : 2 + h, 3 : 3 + w, 3] = 255
    return rgba


def test_cutout_folder_labels_and_crops(tmp_path):
    Image.fromarray(rgba_object(0)).save(tmp_path / "red_car_03.png")
    (tmp_path / "dog").mkdir()
    Image.fromarray(rgba_object(1)).save(tmp_path / "dog" / "001.png")
    folder = CutoutFolder(tmp_path)
    assert folder.labels == ["dog", "red car"]  # sorted paths: dog/001.png first
    rgba, label = folder.load(1)
    assert label == "red car" and rgba.shape == (12, 10, 4)  # cropped to the object
    assert np.array_equal(rgba, rgba_object(0)[2:14, 3:13])


def test_cutout_folder_refuses_what_cannot_be_pasted(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CutoutFolder(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="holds no .png"):
        CutoutFolder(tmp_path / "a")
    Image.fromarray(random_image(0, 8, 8)).save(tmp_path / "a" / "opaque.png")
    with pytest.raises(DataError, match="no transparent pixel"):
        CutoutFolder(tmp_path / "a").load(0)
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "a" / "opaque.png")
    with pytest.raises(DataError, match="fully transparent"):
        CutoutFolder(tmp_path / "a").load(0)


def test_instance_mask_cutouts(tmp_path):
    image = random_image(0, 20, 24)
    write_image(tmp_path / "images" / "cat" / "a.png", image)
    write_image(tmp_path / "images" / "cat" / "unmatched.png", image)
    mask = np.zeros((20, 24), np.uint8)
    mask[5:9, 6:16] = 255
    write_image(tmp_path / "masks" / "cat" / "a.png", mask)
    cutouts = build_cutouts(str(tmp_path / "images"), str(tmp_path / "masks"))
    assert isinstance(cutouts, InstanceMaskCutouts) and len(cutouts) == 1
    rgba, label = cutouts.load(0)
    assert label == "cat" and rgba.shape == (4, 10, 4)
    assert np.array_equal(rgba[..., :3], image[5:9, 6:16]) and (rgba[..., 3] == 255).all()
    write_image(tmp_path / "masks" / "cat" / "a.png", mask[:10])
    with pytest.raises(DataError, match="is 24x10 but its image .* is 24x20"):
        cutouts.load(0)


def test_procedural_cutouts_prefer_the_scene_class():
    cutouts = ProceduralCutouts(same_class_probability=1.0)
    rng = np.random.default_rng(0)
    assert {cutouts.sample(rng, "blue square")[1] for _ in range(10)} == {"blue square"}
    labels = {ProceduralCutouts(0.0).sample(rng, "blue square")[1] for _ in range(60)}
    assert labels == set(OBJECT_NAMES)


def test_an_unreadable_cutout_is_skipped_and_reported(tmp_path):
    (tmp_path / "cutouts").mkdir()
    Image.fromarray(rgba_object(0)).save(tmp_path / "cutouts" / "good.png")
    (tmp_path / "cutouts" / "bad.png").write_bytes(b"\x89PNG no")
    dm = InpaintingDataModule(
        size=32, paste_probability=1.0, cutouts=str(tmp_path / "cutouts"), train_length=12
    )
    dataset = dm.dataset("train")
    samples = [dataset[i] for i in range(12)]
    bad = [s for s in samples if s["skipped"]]
    assert bad and all("bad.png" in s["skipped"] and s["kind"] == "hole" for s in bad)
    assert any(s["kind"] == "paste" and s["object_label"] == "good" for s in samples)
