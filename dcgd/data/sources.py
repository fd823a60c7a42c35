"""Where clean images come from: Places365, Paris StreetView, any folder, and built-in data.

A source is a list of images: ``len(source)`` and ``source.load(index, rng) -> Item``. File
sources ignore ``rng``; the procedural source draws its scene from it. ``Item.fixed_size``
tells the dataset the image is already at the working size and must not be cropped (the
procedural labels depend on where the objects are).

Splits: validation is carved from the TRAINING images, never from the test images (see
:func:`validation_slice`): ``val`` is the slice, ``train`` the rest, ``test`` the held-out set
(Places365's official val set, Paris' ``paris_eval_gt/``, a folder's ``test/`` or ``val/``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcgd.data.images import IMAGE_EXTENSIONS, load_rgb
from dcgd.data.photos import PHOTOS, load_photo
from dcgd.data.procedural import Scene, render_scene
from dcgd.describe.vocabulary import read_vocabulary, resolve_text_file
from dcgd.errors import DataError


@dataclass
class Item:
    image: np.ndarray  # uint8 [H,W,3]
    id: str
    category: str = ""  # scene class when the dataset has one (Places365, procedural)
    scene: Scene | None = None  # procedural layout, for labels that follow the mask
    fixed_size: bool = False


VAL_FRACTION = 0.01  # share of the training images carved out for validation
VAL_SALT = "dcgd-val-v1/"  # fixed (not data.seed): every run and seed trains on the same images


def validation_slice(ids: list[str]) -> list[bool]:
    """Which of ``ids`` (image ids: paths under the dataset's folder) are validation images.

    An image is in the slice when the first 8 bytes of ``sha256(VAL_SALT + id)``, read as a
    fraction of 2**64, are below ``VAL_FRACTION`` (1%); when none is (a folder of a few
    images), the one with the lowest hash. A function of each id alone: the same on every
    machine, world size, worker count and file-system order, and adding images never moves
    an old one between train and val.
    """
    keys = [
        int.from_bytes(hashlib.sha256((VAL_SALT + i).encode()).digest()[:8], "big") / 2**64
        for i in ids
    ]
    chosen = [k < VAL_FRACTION for k in keys]
    if keys and not any(chosen):
        chosen[min(range(len(keys)), key=keys.__getitem__)] = True
    return chosen


class ImageSource:
    """Base class: a list of image files."""

    name = "folder"
    eval_crop = "center"  # "center", or "random" (seeded) for sources with few images

    def __init__(self, paths: list[Path], root: Path, categories: list[str] | None = None):
        if not paths:
            raise DataError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) found for {self.name} under {root}; "
                "check the root and split, or the file list"
            )
        self.paths = paths
        self.root = root
        self.categories = categories

    def __len__(self) -> int:
        return len(self.paths)

    def item_id(self, index: int) -> str:
        path = self.paths[index]
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def load(self, index: int, rng: np.random.Generator | None = None) -> Item:
        category = self.categories[index] if self.categories is not None else ""
        return Item(load_rgb(self.paths[index]), self.item_id(index), category)

    def carve(self, part: str) -> ImageSource:
        """Keep the validation slice (``part="val"``) or the rest (``"train"``; anything else
        keeps every image) of these images; see :func:`validation_slice`."""
        if part not in ("train", "val"):
            return self
        if len(self.paths) < 2:
            raise DataError(
                f"{self.name} under {self.root} has {len(self.paths)} image(s); validation is "
                "carved from the training images, so add at least 2"
            )
        in_val = validation_slice([self.item_id(i) for i in range(len(self.paths))])
        keep = [i for i, chosen in enumerate(in_val) if chosen == (part == "val")]
        self.paths = [self.paths[i] for i in keep]
        if self.categories is not None:
            self.categories = [self.categories[i] for i in keep]
        return self


def _require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} {path} does not exist. {hint}")
    return path


def _images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


class ImageFolder(ImageSource):
    """Every image under ``root`` (recursively), in sorted path order."""

    name = "image folder"

    def __init__(self, root: str | Path) -> None:
        root = _require_dir(Path(root).expanduser(), "image folder", "Give an existing directory.")
        super().__init__(_images_under(root), root)


class ParisStreetView(ImageSource):
    """Paris StreetView: ``paris_train_original/`` (train, and the validation slice carved
    from it: see :func:`validation_slice`) and ``paris_eval_gt/`` (test only)."""

    name = "Paris StreetView"
    FOLDERS = {
        "train": "paris_train_original",
        "val": "paris_train_original",
        "test": "paris_eval_gt",
    }

    def __init__(self, root: str | Path, split: str = "train") -> None:
        if split not in self.FOLDERS:
            raise DataError(f"Paris StreetView split must be train, val or test; got {split!r}")
        root = Path(root).expanduser()
        folder = _require_dir(
            root / self.FOLDERS[split],
            f"Paris StreetView {split} folder",
            f"Expected {root}/paris_train_original/ and {root}/paris_eval_gt/ (the dataset as "
            "distributed by its authors; ask them for access).",
        )
        super().__init__(_images_under(folder), folder)
        self.carve(split)


def _normalise_category(text: str) -> str:
    return re.sub(r"[\s/_\-]+", " ", text).strip().lower()


class Places365(ImageSource):
    """Places365-Standard in torchvision's layouts or the easyformat.

    torchvision (``torchvision.datasets.Places365``): ``data_256_standard/`` or
    ``data_large_standard/`` with ``places365_train_standard.txt``; ``val_256/`` or
    ``val_large/`` with ``places365_val.txt``. Easyformat: ``places365_standard/{train,val}/
    <category>/*.jpg`` (``root`` may be ``places365_standard`` itself). ``test`` reads the
    official validation set (the paper's test images); ``val`` is a slice of the training
    images (:func:`validation_slice`), which ``train`` leaves out.
    """

    name = "Places365"
    TORCHVISION = {
        "train": (("data_256_standard", "data_large_standard"), "places365_train_standard.txt"),
        "val": (("val_256", "val_large"), "places365_val.txt"),
    }

    def __init__(self, root: str | Path, split: str = "train", small: bool = True) -> None:
        if split not in ("train", "val", "test"):
            raise DataError(f"Places365 split must be train, val or test; got {split!r}")
        root = _require_dir(
            Path(root).expanduser(),
            "Places365 root",
            "Download Places365-Standard (torchvision.datasets.Places365(root, download=True) "
            "on a connected machine) and point data.root at it.",
        )
        part = "val" if split == "test" else "train"
        names = self._category_names(root)
        easy = self._easyformat_dir(root, part)
        if easy is not None:
            paths, categories = self._from_easyformat(easy, names)
            super().__init__(paths, easy, categories)
        else:
            folder, paths, categories = self._from_torchvision(root, part, small, names)
            super().__init__(paths, folder, categories)
        self.carve(split)

    @staticmethod
    def _category_names(root: Path) -> list[str]:
        local = root / "categories_places365.txt"
        path = local if local.is_file() else resolve_text_file("categories_places365.txt", "")
        return read_vocabulary(path, "Places365 categories")

    @staticmethod
    def _easyformat_dir(root: Path, part: str) -> Path | None:
        for candidate in (root / "places365_standard" / part, root / part):
            if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
                return candidate
        return None

    @staticmethod
    def _from_easyformat(folder: Path, names: list[str]) -> tuple[list[Path], list[str]]:
        known = {_normalise_category(n): n for n in names}
        paths, categories = [], []
        for path in _images_under(folder):
            relative = path.relative_to(folder).parent.as_posix()
            categories.append(known.get(_normalise_category(relative), relative.replace("/", " ")))
            paths.append(path)
        return paths, categories

    def _from_torchvision(
        self, root: Path, part: str, small: bool, names: list[str]
    ) -> tuple[Path, list[Path], list[str]]:
        folders, list_name = self.TORCHVISION[part]
        folder = root / folders[0 if small else 1]
        if not folder.is_dir():
            raise DataError(
                f"Places365 {part} images not found: neither {folder} nor an easyformat folder "
                f"{root}/places365_standard/{part}/<category>/ exists. Check data.root, and "
                f"data.places_small (256 px: {folders[0]}, large: {folders[1]})."
            )
        file_list = root / list_name
        if not file_list.is_file():
            raise DataError(
                f"Places365 file list {file_list} is missing; it comes in torchvision's "
                "filelist_places365-standard.tar (extract it into data.root)."
            )
        paths, categories = [], []
        for number, line in enumerate(file_list.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                name, label = line.rsplit(maxsplit=1)
                category = names[int(label)]
            except (ValueError, IndexError):
                raise DataError(
                    f"{file_list}:{number}: cannot read {line!r}; expected '<path> <category "
                    f"index 0..{len(names) - 1}>'"
                ) from None
            paths.append(folder / name.lstrip("/"))
            categories.append(category)
        if paths and not paths[0].is_file():
            # Checked once here: otherwise every sample would be skipped as unreadable.
            raise DataError(
                f"{file_list} names {paths[0]}, which does not exist: the file list does not "
                f"match the images in {folder}. Check data.root and data.places_small "
                f"(256 px images: {folders[0]}, large: {folders[1]})."
            )
        return folder, paths, categories


class Procedural:
    """Built-in scenes (``dcgd.data.procedural``) rendered at ``size``: no files, no download.

    ``length`` is how many different scenes an epoch shows; scene ``index`` of an evaluation
    set is fixed by the generator the data module passes in.
    """

    name = "procedural"
    eval_crop = "center"

    def __init__(self, size: int, length: int = 2000) -> None:
        self.size = size
        self.length = length

    def __len__(self) -> int:
        return self.length

    def load(self, index: int, rng: np.random.Generator) -> Item:
        scene = render_scene(rng, self.size)
        return Item(scene.image, f"procedural/{index:06d}", scene.scene, scene, fixed_size=True)


class Photos:
    """Colour photographs shipped inside scikit-image and scikit-learn, cycled.

    Eight photos: random crops at random scales make the variety, so an epoch is
    ``length`` crops, and evaluation uses seeded random crops (``eval_crop = "random"``).
    """

    name = "built-in photos"
    eval_crop = "random"

    def __init__(self, length: int = 800, names: list[str] | None = None) -> None:
        self.names = list(names or PHOTOS)
        unknown = [n for n in self.names if n not in PHOTOS]
        if unknown:
            raise DataError(f"unknown built-in photos {unknown}; choose from {', '.join(PHOTOS)}")
        self.length = length

    def __len__(self) -> int:
        return self.length

    def load(self, index: int, rng: np.random.Generator | None = None) -> Item:
        name = self.names[index % len(self.names)]
        return Item(load_photo(name), f"photo/{name}/{index:06d}")


def _folder_split(folder: Path, split: str) -> Path:
    """The folder ``split`` reads. Split folder: ``train`` and ``val`` read ``train/`` (val is
    carved from it), ``test`` reads ``test/``, else ``val/`` (the held-out images). Unsplit
    folder: every split reads the whole folder (val carved, train and test the rest)."""
    present = [s for s in ("train", "val", "test") if (folder / s).is_dir()]
    if not present:
        return folder
    for candidate in ("test", "val") if split == "test" else ("train",):
        if candidate in present:
            return folder / candidate
    wanted = "test/ or val/" if split == "test" else "train/"
    raise DataError(
        f"image folder {folder} is split ({', '.join(p + '/' for p in present)}) but has no "
        f"{wanted} sub-folder for the {split} split; add one (validation is carved from train/)"
    )


def build_source(
    dataset: str, split: str, root: str | None, size: int, length: int | None, places_small: bool
) -> ImageSource | Procedural | Photos:
    """The source of ``dataset`` for ``split`` (train / val / test)."""
    if dataset == "procedural":
        return Procedural(size, length or 2000)
    if dataset == "photos":
        return Photos(length or 800)
    if root is None:
        raise DataError(f"dataset {dataset!r} needs data.root (the folder that holds it)")
    if dataset == "places365":
        return Places365(root, split, places_small)
    if dataset == "paris":
        return ParisStreetView(root, split)
    if dataset == "folder":
        folder = Path(root).expanduser()
        source = ImageFolder(_folder_split(folder, split))
        split_folder = source.root != folder
        # A held-out test/ (or val/) folder is read whole; an unsplit folder's test split is
        # every image but the validation slice, so val never shares an image with test.
        return source.carve("train" if split == "test" and not split_folder else split)
    raise DataError(
        f"unknown dataset {dataset!r}; choose procedural, photos, places365, paris or folder"
    )
