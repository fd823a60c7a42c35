"""Fixture trees in the layouts real datasets ship in, built from small random images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def write_image(path: Path, image: np.ndarray) -> Path:
    """Write ``uint8`` RGB ``[H,W,3]`` (or gray ``[H,W]``) with OpenCV, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = image[..., ::-1] if image.ndim == 3 else image  # OpenCV stores BGR
    assert cv2.imwrite(str(path), np.ascontiguousarray(data)), path
    return path


def random_image(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# (file-list path, category index in categories_places365.txt, category name as dcgd reads it)
PLACES_TRAIN = [
    ("/a/airfield/00000001.jpg", 0, "airfield"),
    ("/a/airfield/00000002.jpg", 0, "airfield"),
    ("/a/arena/hockey/00000001.jpg", 15, "arena hockey"),
    ("/b/balcony/interior/00000007.jpg", 33, "balcony interior"),
    ("/a/airplane_cabin/00000003.jpg", 1, "airplane cabin"),
]
PLACES_VAL = [
    ("Places365_val_00000001.jpg", 141, "field wild"),
    ("Places365_val_00000002.jpg", 352, "waiting room"),
    ("Places365_val_00000003.jpg", 94, "cliff"),
]


@pytest.fixture
def places_torchvision(tmp_path) -> Path:
    """torchvision's Places365 layout: image folders next to their file lists."""
    root = tmp_path / "places"
    lines = []
    for i, (name, index, _) in enumerate(PLACES_TRAIN):
        write_image(root / "data_256_standard" / name.lstrip("/"), random_image(i))
        lines.append(f"{name} {index}")
    (root / "places365_train_standard.txt").write_text("\n".join(lines) + "\n")
    lines = []
    for i, (name, index, _) in enumerate(PLACES_VAL):
        write_image(root / "val_256" / name, random_image(100 + i))
        lines.append(f"{name} {index}")
    (root / "places365_val.txt").write_text("\n".join(lines) + "\n")
    return root


def easyformat_folder(name: str, nested: bool) -> str:
    """``/a/arena/hockey/x.jpg`` -> ``arena-hockey`` (the easyformat archive) or
    ``arena/hockey`` (nested, as some re-packagings have it)."""
    parts = name.strip("/").split("/")[1:-1]
    return "/".join(parts) if nested else "-".join(parts)


def easyformat_val_folder(index: int, nested: bool) -> str:
    category = {141: "field/wild", 352: "waiting_room", 94: "cliff"}[index]
    return category if nested else category.replace("/", "-")


@pytest.fixture(params=["dashed", "nested"])
def places_easyformat(tmp_path, request) -> tuple[Path, bool]:
    """``places365_standard/{train,val}/<category>/`` (Places365-Standard easyformat), with
    two-level categories as one ``arena-hockey`` folder or nested ``arena/hockey`` folders."""
    root = tmp_path / "places"
    nested = request.param == "nested"
    for i, (name, _, _) in enumerate(PLACES_TRAIN):
        folder = easyformat_folder(name, nested)
        write_image(
            root / "places365_standard" / "train" / folder / Path(name).name, random_image(i)
        )
    for i, (name, index, _) in enumerate(PLACES_VAL):
        folder = easyformat_val_folder(index, nested)
        write_image(root / "places365_standard" / "val" / folder / name, random_image(100 + i))
    return root, nested


PARIS_TRAIN = ["48.842624_2.355318_90_-004.JPG", "48.857872_2.291474_270_-004.JPG"]
PARIS_EVAL = ["001_im.png", "002_im.png", "003_im.png"]


@pytest.fixture
def paris(tmp_path) -> Path:
    """Paris StreetView as its authors distribute it (images are 936x537)."""
    root = tmp_path / "paris"
    for i, name in enumerate(PARIS_TRAIN):
        write_image(root / "paris_train_original" / name, random_image(i, 54, 94))
    for i, name in enumerate(PARIS_EVAL):
        write_image(root / "paris_eval_gt" / name, random_image(10 + i, 54, 94))
    return root
