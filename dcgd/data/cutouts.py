"""Object cut-outs to paste into clean images (``paste`` pairs): RGBA patches with a label.

Four kinds: the built-in procedural objects, a folder of RGBA PNGs, images with instance
masks (an image folder and a mask folder matched by file name), and COCO-format instance
annotations (a mapping ``{coco: instances_*.json, images: <folder>, ...}``, see
:mod:`dcgd.data.coco`). A cut-out source
has ``sample(rng, context_label) -> (rgba uint8 [h,w,4], label)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dcgd.data.images import IMAGE_EXTENSIONS, load_mask, load_rgb, load_rgba
from dcgd.data.procedural import OBJECT_NAMES, alpha_fill, render_object
from dcgd.errors import DataError

if TYPE_CHECKING:
    from dcgd.data.coco import CocoCutouts

_TRAILING_NUMBER = re.compile(r"[\s_\-]*\d+$")


def label_from_path(path: Path, root: Path) -> str:
    """The parent folder under ``root`` (``cutouts/dog/001.png`` -> ``dog``), else the stem
    without its trailing number (``red_car_03.png`` -> ``red car``)."""
    relative = path.relative_to(root)
    raw = relative.parts[0] if len(relative.parts) > 1 else _TRAILING_NUMBER.sub("", path.stem)
    return raw.replace("_", " ").replace("-", " ").strip()


class ProceduralCutouts:
    """The built-in objects (``dcgd.data.procedural``); with probability
    ``same_class_probability`` the pasted object is of the class already in the scene (the
    paper's hard case: remove one of several look-alikes)."""

    # Rendered large and shrunk to the size a paste needs: a 512 px pair can need a 400 px
    # object, which an upscaled small render would show blurred.
    def __init__(self, same_class_probability: float = 0.5, side: int = 256) -> None:
        self.same_class_probability = same_class_probability
        self.side = side

    def sample(self, rng: np.random.Generator, context_label: str = "") -> tuple[np.ndarray, str]:
        if context_label in OBJECT_NAMES and rng.random() < self.same_class_probability:
            label = context_label
        else:
            label = OBJECT_NAMES[int(rng.integers(len(OBJECT_NAMES)))]
        return render_object(label, self.side, rng), label

    def fill_fraction(self, label: str) -> float:
        return alpha_fill(label)


def _crop_to_alpha(rgba: np.ndarray, path: Path) -> np.ndarray:
    alpha = rgba[..., 3]
    ys, xs = np.nonzero(alpha)
    if len(ys) == 0:
        raise DataError(f"cut-out {path} is fully transparent: there is no object to paste")
    if len(ys) == alpha.size:
        raise DataError(
            f"cut-out {path} has no transparent pixel: save objects as RGBA PNGs whose "
            "background is transparent (or use cutouts_masks for image + mask pairs)"
        )
    return np.ascontiguousarray(rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


class CutoutFolder:
    """RGBA PNGs under ``root``; the label is the sub-folder name or the file stem."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"cut-out folder {self.root} does not exist")
        self.paths = sorted(p for p in self.root.rglob("*.png"))
        if not self.paths:
            raise DataError(f"cut-out folder {self.root} holds no .png files")
        self.labels = [label_from_path(p, self.root) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[np.ndarray, str]:
        path = self.paths[index]
        return _crop_to_alpha(load_rgba(path), path), self.labels[index]

    def sample(self, rng: np.random.Generator, context_label: str = "") -> tuple[np.ndarray, str]:
        return self.load(int(rng.integers(len(self.paths))))

    def fill_fraction(self, label: str) -> float | None:
        return None  # measured per cut-out


class InstanceMaskCutouts(CutoutFolder):
    """Objects cut from photos by instance masks: ``images/<name>.<ext>`` with a binary mask
    ``masks/<name>.png`` of the same size (white = object). Labels as in ``CutoutFolder``,
    from the image's path under ``images``."""

    def __init__(self, images: str | Path, masks: str | Path) -> None:
        self.root = Path(images).expanduser()
        self.mask_root = Path(masks).expanduser()
        for folder, what in ((self.root, "image"), (self.mask_root, "mask")):
            if not folder.is_dir():
                raise DataError(f"instance {what} folder {folder} does not exist")
        by_stem = {
            p.relative_to(self.mask_root).with_suffix("").as_posix(): p
            for p in self.mask_root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
        }
        self.paths, self.mask_paths = [], []
        for path in sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            key = path.relative_to(self.root).with_suffix("").as_posix()
            if key in by_stem:
                self.paths.append(path)
                self.mask_paths.append(by_stem[key])
        if not self.paths:
            raise DataError(
                f"no image under {self.root} has a mask of the same name under {self.mask_root}"
            )
        self.labels = [label_from_path(p, self.root) for p in self.paths]

    def load(self, index: int) -> tuple[np.ndarray, str]:
        from dcgd.data.images import check_mask

        image, mask = load_rgb(self.paths[index]), load_mask(self.mask_paths[index])
        check_mask(mask, image.shape, str(self.mask_paths[index]), str(self.paths[index]))
        rgba = np.dstack([image, mask * 255]).astype(np.uint8)
        return _crop_to_alpha(rgba, self.paths[index]), self.labels[index]


def build_cutouts(
    spec: str | dict | None, masks: str | None = None, same_class_probability: float = 0.5
) -> ProceduralCutouts | CutoutFolder | CocoCutouts | None:
    """``"procedural"`` (default), a folder of RGBA PNGs, an image folder + ``masks``, or a
    COCO mapping (``{coco: ..., images: ..., categories, min_area, cache}``)."""
    if isinstance(spec, dict):
        from dcgd.data.coco import CocoCutouts, check_coco_spec

        check_coco_spec(spec)
        return CocoCutouts(**spec)
    if spec is None or spec == "procedural":
        return ProceduralCutouts(same_class_probability)
    if masks is not None:
        return InstanceMaskCutouts(spec, masks)
    return CutoutFolder(spec)
