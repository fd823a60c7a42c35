"""``dataset: pairs``: real removal pairs on disk, RORD-style, for ``test`` (and ``val``).

Layout: ``<root>/source/`` (the photo WITH the object), ``<root>/mask/`` (white = the
object's region), ``<root>/target/`` (the same scene WITHOUT the object), matched by the path
relative to each folder without its extension (``a/b.jpg`` in ``source/`` pairs with
``a/b.png`` in ``mask/`` and ``a/b.jpg`` in ``target/``). A split layout
``<root>/{test,val}/{source,mask,target}/`` is read too; ``test`` falls back to ``val/``, and
``val`` needs its own ``val/`` (never the test pairs). An unsplit folder is a test set only.

Each pair is one sample, all of them, in sorted name order: ``source`` is the real photo
with the object (not ``target∘(1−mask)``), ``kind`` ``"paste"`` (a removal pair),
``hidden`` the whole mask, ``bucket`` the mask-ratio bucket at the working size (-1 outside
every bucket, counted apart as the other sets' outside images are). Source, mask and target
get the same centre crop (short side resized to ``size``), so they stay aligned.

A pair whose target or mask is missing, whose files cannot be opened, whose source and
target (or mask) differ in size, or whose mask is empty or full at the working size, is
skipped at setup and listed in ``bad`` (the data module reports it with the other skipped
files); a file that opens but fails to decode later is replaced by the next pair and
reported. No usable pair at all is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dcgd.data.buckets import Bucket, bucket_index
from dcgd.data.images import (
    center_crop,
    index_images,
    load_mask,
    load_rgb,
    mask_to_tensor,
    to_tensor,
)
from dcgd.errors import ConfigError, DataError

PARTS = ("source", "mask", "target")
MAX_SKIPS = 16  # consecutive undecodable pairs before giving up


def pairs_folder(root: str | Path, split: str) -> Path:
    """The folder holding ``source/ mask/ target/`` for ``split`` (test / val)."""
    root = Path(root).expanduser()
    if split == "train":
        raise ConfigError(
            "dataset: pairs is for evaluation (test, validate): train on places365, paris, "
            "folder, photos or procedural and test on the pairs"
        )
    candidates = ("test", "val") if split == "test" else ("val",)
    for name in candidates:
        if all((root / name / part).is_dir() for part in PARTS):
            return root / name
    if split == "test" and all((root / part).is_dir() for part in PARTS):
        return root
    if split == "val":
        raise DataError(
            f"pairs folder {root} has no val/{{source,mask,target}}/ for validation (the test "
            "pairs are never used for it); add one, or set trainer.limit_val_batches: 0"
        )
    raise DataError(
        f"pairs folder {root} needs source/, mask/ and target/ sub-folders (or test/ holding "
        "them); see README: 'Removal pairs'"
    )


def _crop_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """The mask through the images' centre crop: resized as 0/255, then thresholded."""
    return (center_crop(mask * np.uint8(255), size) > 127).astype(np.uint8)


@dataclass
class PairFiles:
    key: str
    source: Path
    mask: Path
    target: Path
    bucket: int
    count: int  # masked pixels at the working size


class PairedDataset(Dataset):
    """Removal pairs of a ``pairs`` folder as samples of the batch contract (DESIGN.md §2)."""

    name = "pairs"

    def __init__(
        self, root: str | Path, split: str, size: int, buckets: tuple[Bucket, ...]
    ) -> None:
        self.folder = pairs_folder(root, split)
        self.split = split
        self.size = size
        self.buckets = buckets
        self.bad: list[str] = []
        found = {}
        for part in PARTS:
            found[part], twice = index_images(self.folder / part)
            ambiguous = [
                f"{k}: two files in {part}/ ({', '.join(p.name for p in v)})"
                for k, v in twice.items()
            ]
            self.bad += ambiguous
        sources, masks, targets = (found[p] for p in PARTS)
        for key in sorted((set(masks) | set(targets)) - set(sources)):
            self.bad.append(f"{key}: no source image in {self.folder / 'source'}")
        self.pairs: list[PairFiles] = []
        for key in sorted(sources):
            if key not in targets:
                self.bad.append(f"{key}: no target image in {self.folder / 'target'}")
            elif key not in masks:
                self.bad.append(f"{key}: no mask in {self.folder / 'mask'}")
            else:
                pair = self._check(key, sources[key], masks[key], targets[key])
                if pair is not None:
                    self.pairs.append(pair)
        if not self.pairs:
            first = f" (first problem: {self.bad[0]})" if self.bad else ""
            raise DataError(
                f"no usable removal pair in {self.folder}: {len(self.bad)} skipped{first}; "
                "give matching source/ mask/ target/ files of the same size"
            )

    def _check(self, key: str, source: Path, mask: Path, target: Path) -> PairFiles | None:
        """The pair, or ``None`` (recorded in ``bad``): sizes from the headers, mask decoded."""
        try:
            sizes = {}
            for part, path in (("source", source), ("target", target)):
                with Image.open(path) as image:
                    sizes[part] = image.size
            region = load_mask(mask)
        except (OSError, ValueError, DataError) as err:
            self.bad.append(f"{key}: unreadable ({err})")
            return None
        sizes["mask"] = (region.shape[1], region.shape[0])
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{p} {w}x{h}" for p, (w, h) in sizes.items())
            self.bad.append(f"{key}: sizes differ ({shown})")
            return None
        region = _crop_mask(region, self.size)
        count = int(np.count_nonzero(region))
        if count in (0, region.size):
            what = "empty" if count == 0 else "the whole image"
            self.bad.append(f"{key}: the mask is {what} at {self.size}x{self.size} (centre crop)")
            return None
        bucket = bucket_index(count, region.size, self.buckets)
        return PairFiles(key, source, mask, target, bucket, count)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(source, mask, target)`` at the working size, aligned (one centre crop)."""
        pair = self.pairs[index]
        source, target = load_rgb(pair.source), load_rgb(pair.target)
        if source.shape != target.shape:
            raise DataError(f"{pair.key}: source and target changed size since setup")
        mask = _crop_mask(load_mask(pair.mask), self.size)
        return center_crop(source, self.size), mask, center_crop(target, self.size)

    def __getitem__(self, index: int) -> dict:
        skipped: list[str] = []
        for attempt in range(MAX_SKIPS):
            position = (index + attempt) % len(self.pairs)
            try:
                source, mask, target = self.load(position)
                break
            except DataError as err:
                skipped.append(f"{self.pairs[position].key}: {err}")
        else:
            raise DataError(
                f"{MAX_SKIPS} pairs in a row could not be read in {self.folder} (first: "
                f"{skipped[0]}); the folder looks broken"
            )
        pair = self.pairs[position]
        count = int(np.count_nonzero(mask))
        mask_tensor = mask_to_tensor(mask)
        return {
            "source": to_tensor(source),
            "target": to_tensor(target),
            "mask": mask_tensor,
            "hidden": mask_tensor.clone(),
            "mask_ratio": torch.tensor(count / mask.size, dtype=torch.float32),
            "bucket": torch.tensor(pair.bucket, dtype=torch.long),
            "id": f"{self.split}/{index:07d}/{pair.key}",
            "kind": "paste",
            "object_label": "",
            "scene_label": "",
            "skipped": "\n".join(skipped),
        }
