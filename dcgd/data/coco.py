"""Object cut-outs from COCO-format instance annotations (COCO, LVIS, ADE20K instance exports).

``data.cutouts: {coco: instances_train2017.json, images: train2017/, categories: [...],
min_area: 64, cache: <folder>}``. Every annotation that passes the filters is a cut-out whose
label is its category name (``T_mask`` for the label describer):

- no crowd (``iscrowd: 1`` is a group, not one object), a category in ``categories`` (all
  when not given), at least ``min_area`` pixels, and not cut by the image border (an object
  touching the border is probably cut off);
- a bad annotation (an image id not in the list, a missing image file, a degenerate polygon,
  an undecodable RLE, zero area) is skipped and reported with the skipped files.

The annotations are read once: the kept instances (as compressed RLE) are written to
``<cache>/<key>/index.json``, ``key`` a hash of the annotation file (path, size, time) and the
filters, so a later run reads the small index, not the annotation file. Each cut-out is saved
as an RGBA PNG crop ``<cache>/<key>/crops/<id>.png`` the first time it is used: an epoch does
not decode annotations or whole images again. Writes are atomic (temp + rename), so workers
and ranks may fill the cache at once. The cache defaults to ``<annotations>.dcgd-cutouts/``
beside the annotation file.

Same-image duplication (the paper's Fig. 7 case on real photos): :func:`same_image_pair`
pastes a copy of one of an image's own objects elsewhere in that image; the target is the
image, the mask covers the copy, and its twin stays in both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
from PIL import Image

from dcgd.data.buckets import Bucket
from dcgd.data.images import load_rgb, load_rgba
from dcgd.data.pairs import Pair, paste_pair
from dcgd.errors import ConfigError, DataError
from dcgd.files import save_atomic, write_atomic

INDEX_VERSION = 1
COCO_KEYS = ("coco", "images", "categories", "min_area", "cache")
DEFAULT_MIN_AREA = 64


def mask_utils() -> ModuleType:
    """``pycocotools.mask``, or one line saying how to install it."""
    try:
        from pycocotools import mask
    except ImportError:
        raise ConfigError(
            "COCO cut-outs (data.cutouts: {coco: ...}) need pycocotools: pip install "
            "pycocotools (or pip install 'dcgd[coco]')"
        ) from None
    return mask


def check_coco_spec(spec: dict) -> None:
    """The keys and paths of a ``data.cutouts: {coco: ...}`` mapping, before any work."""
    unknown = sorted(set(spec) - set(COCO_KEYS))
    if unknown or "coco" not in spec or "images" not in spec:
        raise ConfigError(
            "data.cutouts as a mapping is a COCO-format source: {coco: <instances_*.json>, "
            "images: <image folder>} plus optional categories, min_area, cache; got keys "
            f"{', '.join(map(str, spec)) or 'none'}"
        )
    annotations, images = Path(spec["coco"]).expanduser(), Path(spec["images"]).expanduser()
    if not annotations.is_file():
        raise DataError(
            f"data.cutouts.coco {annotations} does not exist; point it at an instances_*.json"
        )
    if not images.is_dir():
        raise DataError(
            f"data.cutouts.images {images} does not exist; point it at the annotated images"
        )
    categories = spec.get("categories")
    if categories is not None and (
        isinstance(categories, str) or not all(isinstance(c, str) for c in categories)
    ):
        raise ConfigError(
            f"data.cutouts.categories must be a list of category names; got {categories!r}"
        )
    min_area = spec.get("min_area", DEFAULT_MIN_AREA)
    if isinstance(min_area, bool) or not isinstance(min_area, int) or min_area < 1:
        raise ConfigError(f"data.cutouts.min_area must be a whole number >= 1; got {min_area!r}")
    mask_utils()


def _read_annotations(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(
            f"COCO annotations {path} cannot be read ({err}); give an instances_*.json"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DataError(
            f"COCO annotations {path} lack images / annotations / categories lists; give a "
            "COCO-format instances_*.json"
        )
    return data


@dataclass(frozen=True)
class Instance:
    id: int
    file_name: str
    label: str
    box: tuple[int, int, int, int]  # x, y, w, h of the object in its image
    size: tuple[int, int]  # the image's h, w
    counts: str  # compressed RLE of the object's mask


def _segmentation_rle(segmentation: list | dict, h: int, w: int, mu: ModuleType) -> dict:
    """One compressed RLE from a polygon list, an uncompressed or a compressed RLE."""
    if isinstance(segmentation, list):
        polygons = [
            p
            for p in segmentation
            if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and np.isfinite(p).all()
        ]
        if not polygons:
            raise ValueError("degenerate polygon (fewer than 3 points)")
        return mu.merge(mu.frPyObjects([[float(v) for v in p] for p in polygons], h, w))
    if isinstance(segmentation, dict) and "counts" in segmentation:
        if list(segmentation.get("size", [])) != [h, w]:
            raise ValueError(f"RLE size {segmentation.get('size')} is not the image's {[h, w]}")
        if isinstance(segmentation["counts"], list):
            return mu.frPyObjects(segmentation, h, w)
        counts = segmentation["counts"]
        return {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
    raise ValueError("segmentation is neither polygons nor RLE")


def build_index(
    annotations: Path, images: Path, categories: list[str] | None, min_area: int
) -> tuple[list[Instance], list[str], dict[str, int]]:
    """Read the annotation file: ``(kept instances, bad annotations, filtered counts)``."""
    mu = mask_utils()
    data = _read_annotations(annotations)
    names = {c.get("id"): str(c.get("name", "")).replace("_", " ") for c in data["categories"]}
    wanted = None if categories is None else {c.replace("_", " ") for c in categories}
    by_id = {i.get("id"): i for i in data["images"] if isinstance(i, dict)}
    exists: dict[str, bool] = {}
    kept, bad = [], []
    filtered = {"crowd": 0, "category": 0, "small": 0, "border": 0}
    for ann in data["annotations"]:
        ann_id = ann.get("id")
        where = f"{annotations.name} annotation {ann_id}"
        if ann.get("iscrowd", 0):
            filtered["crowd"] += 1
            continue
        label = names.get(ann.get("category_id"))
        if label is None or (wanted is not None and label not in wanted):
            filtered["category"] += 1
            continue
        image = by_id.get(ann.get("image_id"))
        if image is None:
            bad.append(f"{where}: image id {ann.get('image_id')} is not in the images list")
            continue
        file_name = str(image.get("file_name", ""))
        if file_name not in exists:
            exists[file_name] = (images / file_name).is_file()
        if not exists[file_name]:
            bad.append(f"{where}: image {images / file_name} is missing")
            continue
        h, w = int(image.get("height", 0)), int(image.get("width", 0))
        try:
            rle = _segmentation_rle(ann.get("segmentation"), h, w, mu)
            area = int(mu.area(rle))
        except (ValueError, TypeError, KeyError, OverflowError) as err:
            bad.append(f"{where}: {err}")
            continue
        if area == 0:
            bad.append(f"{where}: the object has zero area")
            continue
        if area < min_area:
            filtered["small"] += 1
            continue
        x, y, bw, bh = (int(round(v)) for v in mu.toBbox(rle))
        if x <= 0 or y <= 0 or x + bw >= w or y + bh >= h:
            filtered["border"] += 1
            continue
        counts = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        kept.append(Instance(int(ann_id), file_name, label, (x, y, bw, bh), (h, w), counts))
    return kept, bad, filtered


class CocoCutouts:
    """Cut-outs from COCO-format instance annotations (see the module docstring)."""

    def __init__(
        self,
        coco: str | Path,
        images: str | Path,
        categories: list[str] | None = None,
        min_area: int = DEFAULT_MIN_AREA,
        cache: str | Path | None = None,
    ) -> None:
        check_coco_spec(
            {"coco": coco, "images": images, "categories": categories, "min_area": min_area}
        )
        self.annotations = Path(coco).expanduser().resolve()
        self.images = Path(images).expanduser().resolve()
        stat = self.annotations.stat()
        settings = {
            "version": INDEX_VERSION,
            "annotations": str(self.annotations),
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "images": str(self.images),
            "categories": sorted(categories) if categories is not None else None,
            "min_area": min_area,
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        root = (
            Path(cache).expanduser()
            if cache
            else self.annotations.with_name(self.annotations.name + ".dcgd-cutouts")
        )
        self.folder = root / key
        self.read_annotations = False  # whether this instance read the annotation file
        index = self._cached_index(settings)
        if index is None:
            kept, bad, filtered = build_index(self.annotations, self.images, categories, min_area)
            self.read_annotations = True
            index = {
                "settings": settings,
                "instances": [vars(i) | {"box": list(i.box), "size": list(i.size)} for i in kept],
                "bad": bad,
                "filtered": filtered,
            }
            write_atomic(self.folder / "index.json", json.dumps(index))
        self.instances = [
            Instance(**{**i, "box": tuple(i["box"]), "size": tuple(i["size"])})
            for i in index["instances"]
        ]
        self.bad: list[str] = list(index["bad"])
        self.filtered: dict[str, int] = dict(index["filtered"])
        if not self.instances:
            raise DataError(
                f"no annotation in {self.annotations} passes the filters (categories "
                f"{categories or 'all'}, min_area {min_area}, no crowd, not cut by the border; "
                f"filtered {self.filtered}, bad {len(self.bad)}); widen the filters"
            )
        self.by_file: dict[str, list[int]] = {}
        for k, inst in enumerate(self.instances):
            self.by_file.setdefault(Path(inst.file_name).name, []).append(k)

    def _cached_index(self, settings: dict) -> dict | None:
        path = self.folder / "index.json"
        if not path.is_file():
            return None
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None  # a damaged cache is rebuilt
        return index if isinstance(index, dict) and index.get("settings") == settings else None

    def __len__(self) -> int:
        return len(self.instances)

    @property
    def labels(self) -> list[str]:
        return [i.label for i in self.instances]

    def crop_path(self, index: int) -> Path:
        return self.folder / "crops" / f"{self.instances[index].id}.png"

    def load(self, index: int) -> tuple[np.ndarray, str]:
        """The RGBA crop of instance ``index`` (read from the cache, made on first use)."""
        inst = self.instances[index]
        path = self.crop_path(index)
        if path.is_file():
            try:
                return load_rgba(path), inst.label
            except DataError:
                pass  # a damaged crop is made again
        image_path = self.images / inst.file_name
        image = load_rgb(image_path)
        if image.shape[:2] != inst.size:
            raise DataError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but "
                f"{self.annotations.name} says {inst.size[1]}x{inst.size[0]}; fix the "
                "annotations or the image"
            )
        h, w = inst.size
        mask = mask_utils().decode([{"size": [h, w], "counts": inst.counts.encode()}])[..., 0]
        x, y, bw, bh = inst.box
        rgba = np.dstack([image, mask * 255]).astype(np.uint8)[y : y + bh, x : x + bw]
        rgba = np.ascontiguousarray(rgba)
        save_atomic(path, lambda tmp: Image.fromarray(rgba).save(tmp, format="PNG"))
        return rgba, inst.label

    def sample(self, rng: np.random.Generator, context_label: str = "") -> tuple[np.ndarray, str]:
        return self.load(int(rng.integers(len(self.instances))))

    def fill_fraction(self, label: str) -> float | None:
        return None  # measured per cut-out

    def instances_of(self, image_id: str) -> list[int]:
        """The instances annotated on the image whose file name ends ``image_id``'s."""
        return self.by_file.get(Path(image_id).name, [])


def crop_around(
    image: np.ndarray,
    box: tuple[int, int, int, int],
    size: int,
    rng: np.random.Generator,
    min_scale: float = 0.6,
) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """A random square crop (as :func:`dcgd.data.images.random_crop`) that holds ``box`` when
    it fits, resized to ``size`` and flipped half the time: ``(crop, box in it, flipped)``."""
    h, w = image.shape[:2]
    side = int(round(min(h, w) * float(rng.uniform(min_scale, 1.0))))
    side = max(1, min(side, h, w))
    bx, by, bw, bh = box

    def start(lo_edge: int, extent: int, limit: int) -> int:
        lo, hi = max(0, lo_edge + extent - side), min(lo_edge, limit - side)
        if lo > hi:  # the object is larger than the crop: any place
            lo, hi = 0, limit - side
        return int(rng.integers(lo, hi + 1))

    x0, y0 = start(bx, bw, w), start(by, bh, h)
    crop = image[y0 : y0 + side, x0 : x0 + side]
    scale = size / side
    if side != size:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
        crop = cv2.resize(crop, (size, size), interpolation=interpolation)
    tx, ty = (bx - x0) * scale, (by - y0) * scale
    tw, th = bw * scale, bh * scale
    flipped = bool(rng.random() < 0.5)
    if flipped:
        crop = crop[:, ::-1]
        tx = size - (tx + tw)
    twin = (int(np.floor(tx)), int(np.floor(ty)), int(np.ceil(tw)), int(np.ceil(th)))
    return np.ascontiguousarray(crop), twin, flipped


def same_image_pair(
    image: np.ndarray,
    cutouts: CocoCutouts,
    indices: list[int],
    size: int,
    rng: np.random.Generator,
    dilation: int = 3,
    bucket: Bucket | None = None,
) -> Pair | None:
    """A copy of one of ``image``'s own objects pasted elsewhere in it (Fig. 7 on a photo).

    ``target`` is the image (cropped around the object, its twin, resized to ``size``);
    ``source`` adds the copy, at a scale chosen for ``bucket``, where its mask does not touch
    the twin's box; ``mask`` covers the copy only. ``None`` when no place is found. Raises
    :class:`DataError` when the object's crop cannot be made (reported like a bad file).
    """
    k = indices[int(rng.integers(len(indices)))]
    cutout, label = cutouts.load(k)
    inst = cutouts.instances[k]
    if image.shape[:2] != inst.size:
        return None
    target, twin, flipped = crop_around(image, inst.box, size, rng)
    if flipped:
        cutout = np.ascontiguousarray(cutout[:, ::-1])
    x, y, w, h = twin
    avoid = (max(x, 0), max(y, 0), min(x + w, size), min(y + h, size))
    pair = paste_pair(target, cutout, rng, label, dilation, bucket, avoid=avoid)
    if pair is None:
        return None
    pair.meta.update({"twin": twin, "instance": inst.id, "same_image": True})
    return pair
