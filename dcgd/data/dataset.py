"""``InpaintingDataset``: turns a source of clean images into pairs, one dict per sample.

Every random choice of a sample (crop, bucket, pair kind, mask, pasted object) comes from a
generator seeded by ``(seed, stream, split, index)``:

- evaluation splits: ``index`` is the sample number, so the set is a pure function of the
  seed: the same on every machine, worker count and DDP rank;
- training: ``index`` is a *virtual* index ``epoch · len + i`` from :class:`EpochSampler`,
  so epochs differ, and a resumed run sees exactly the samples the killed run would have.

Bad files (corrupt, truncated, unreadable) are skipped: the next image is used and the path
is reported in the sample's ``skipped`` field, which the data module collects and
:class:`dcgd.data.datamodule.SkippedFilesReport` prints at the end of the epoch.

A sample holds ``source`` / ``target`` ``[3,H,W]`` in [-1,1], ``mask`` ``[1,H,W]`` in {0,1},
``hidden`` ``[1,H,W]`` in {0,1} (⊆ ``mask``: the pixels whose target ``source`` does not show,
the whole mask of a hole pair, the opaque object of a paste pair; what the leak test of
DESIGN.md §2 scrambles), ``mask_ratio``, ``bucket``, ``id``, ``kind``, ``object_label``,
``scene_label`` and ``skipped``.

``source`` of a hole pair is 0 (mid-grey) inside the hole in the [-1,1] tensor, so that its
object channel ``s∘o`` is zero; the uint8 :class:`Pair` keeps the black hole other tools use.
``source`` of a paste pair is the object alpha-blended over the target, as a photo shows it:
inside the mask but off the object (the dilation ring) it is the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dcgd.data.buckets import OUTSIDE, Bucket, bucket_index
from dcgd.data.images import center_crop, mask_to_tensor, random_crop, to_tensor
from dcgd.data.masks import (
    STREAM_EVAL_SAMPLE,
    STREAM_TRAIN,
    MaskFolder,
    MaskSettings,
    eval_mask,
    generate_mask,
    seeded_rng,
)
from dcgd.data.pairs import Pair, hole_pair, paste_pair
from dcgd.data.sources import Item
from dcgd.errors import DataError

SPLIT_IDS = {"test": 0, "val": 1, "train": 2}  # test 0: the masks `python -m dcgd masks` writes
MAX_SKIPS = 16  # consecutive bad files before giving up: the dataset itself is broken


@dataclass
class PairSettings:
    """How pairs are made.

    paste_probability: share of ``paste`` pairs (object removal); the rest are ``hole`` pairs.
        0 is classic inpainting (the paper's Table 1), 1 pure object removal.
    paste_dilation: pixels the pasted object's footprint is grown by to make the mask.
    masks: the generated hole masks (ignored when ``mask_folder`` is given).
    same_image_probability: share of the paste pairs that copy one of the image's own
        objects elsewhere in it (needs COCO cut-outs annotating the dataset's images; an
        image with no annotated object gets an ordinary paste pair).
    """

    paste_probability: float = 0.5
    paste_dilation: int = 3
    masks: MaskSettings = MaskSettings()
    same_image_probability: float = 0.0


@dataclass(eq=False, repr=False)  # compared and shown as an object, not field by field
class InpaintingDataset(Dataset):
    source: Any  # an ImageSource or Procedural: len(), load(index, rng), name
    split: str
    size: int
    buckets: tuple[Bucket, ...]
    pairs: PairSettings
    cutouts: Any = None  # dcgd.data.cutouts / coco: sample(rng, context), fill_fraction(label)
    mask_folder: MaskFolder | None = None
    seed: int = 0
    per_bucket: int | None = None

    def __post_init__(self) -> None:
        split, source = self.split, self.source
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {list(SPLIT_IDS)}, got {split!r}")
        if self.pairs.paste_probability > 0 and self.cutouts is None:
            raise DataError("paste pairs need cut-outs: set data.cutouts (e.g. procedural)")
        self.split_id = SPLIT_IDS[split]
        self.train = split == "train"
        if not self.train and not self.per_bucket:
            raise ValueError("an evaluation split needs per_bucket > 0")
        if len(source) == 0:
            raise DataError(f"the {split} split of {source.name} is empty")
        # Evaluation images are visited in a seeded order, so the first N of a big validation
        # set are a fair sample of it (not its first category), the same everywhere.
        self.order = (
            None
            if self.train
            else seeded_rng(self.seed, STREAM_EVAL_SAMPLE, self.split_id).permutation(len(source))
        )
        if self.mask_folder is not None:
            # Read and bucket the folder now, once: workers inherit it, and a folder with no
            # mask in some bucket fails here, at setup, not hours into a run.
            self.mask_folder.by_bucket((self.size, self.size), self.buckets)

    def __len__(self) -> int:
        return len(self.source) if self.train else self.per_bucket * len(self.buckets)

    # ------------------------------------------------------------------ one sample
    def __getitem__(self, index: int) -> dict:
        rng = seeded_rng(
            self.seed, STREAM_TRAIN if self.train else STREAM_EVAL_SAMPLE, self.split_id, index
        )
        bucket = int(rng.integers(len(self.buckets))) if self.train else index % len(self.buckets)
        item, skipped = self._load(index, rng)
        pair, paste = None, None
        if self.pairs.same_image_probability > 0:
            # Drawn only when asked for, so other configs keep their sample streams.
            paste = bool(rng.random() < self.pairs.paste_probability)
            if paste and rng.random() < self.pairs.same_image_probability:
                pair = self._same_image(item, bucket, rng, skipped)
        if pair is None:
            target = self._crop(item, rng)
            pair = self._pair(target, item, bucket, index, rng, skipped, paste)
        count = int(np.count_nonzero(pair.mask))
        found = bucket_index(count, pair.mask.size, self.buckets)
        if not self.train and found == OUTSIDE:
            raise RuntimeError(
                f"evaluation sample {index} fell outside bucket {self.buckets[bucket].name}"
            )
        scene_label = item.scene.label(pair.mask) if item.scene is not None else item.category
        source, mask = to_tensor(pair.source), mask_to_tensor(pair.mask)
        if pair.kind == "hole":
            # s = y∘(1−o) in [-1,1]: the hole is 0 (mid-grey, as Stable Diffusion's masked
            # image), so the object channel s∘o of a hole pair is exactly zero (DESIGN.md §2).
            source.numpy()[:, pair.mask > 0] = 0.0
        return {
            "source": source,
            "target": to_tensor(pair.target),
            "mask": mask,
            "hidden": mask_to_tensor(pair.hidden),
            "mask_ratio": torch.tensor(count / pair.mask.size, dtype=torch.float32),
            "bucket": torch.tensor(found, dtype=torch.long),
            "id": f"{self.split}/{index:07d}/{item.id}",
            "kind": pair.kind,
            "object_label": pair.object_label,
            "scene_label": scene_label,
            "skipped": "\n".join(skipped),
        }

    def _load(self, index: int, rng: np.random.Generator) -> tuple[Item, list[str]]:
        n = len(self.source)
        position = index % n if self.train else int(self.order[index % n])
        skipped: list[str] = []
        for attempt in range(MAX_SKIPS):
            try:
                return self.source.load((position + attempt) % n, rng), skipped
            except DataError as err:
                skipped.append(f"{(position + attempt) % n}: {err}")
        raise DataError(
            f"{MAX_SKIPS} images in a row could not be read in {self.source.name} "
            f"(first: {skipped[0]}); the dataset looks broken"
        )

    def _crop(self, item: Item, rng: np.random.Generator) -> np.ndarray:
        if item.fixed_size:
            return item.image
        if self.train or self.source.eval_crop == "random":
            return random_crop(item.image, self.size, rng)
        return center_crop(item.image, self.size)

    def _pair(
        self,
        target: np.ndarray,
        item: Item,
        bucket: int,
        index: int,
        rng: np.random.Generator,
        skipped: list[str],
        paste: bool | None = None,
    ) -> Pair:
        if paste is None:
            paste = bool(rng.random() < self.pairs.paste_probability)
        if paste:
            context = item.scene.objects[0].label if item.scene and item.scene.objects else ""
            try:
                cutout, label = self.cutouts.sample(rng, context)
            except DataError as err:
                # An unreadable cut-out is skipped like an unreadable image: reported, and
                # this sample becomes a hole pair.
                skipped.append(f"cut-out: {err}")
                return hole_pair(target, self._mask(bucket, index, rng))
            pair = paste_pair(
                target,
                cutout,
                rng,
                label,
                dilation=self.pairs.paste_dilation,
                bucket=self.buckets[bucket],
                fill_fraction=self.cutouts.fill_fraction(label),
            )
            if pair is not None:
                return pair
            # This object cannot cover the bucket (too thin, too small): a hole pair instead.
        return hole_pair(target, self._mask(bucket, index, rng))

    def _same_image(
        self, item: Item, bucket: int, rng: np.random.Generator, skipped: list[str]
    ) -> Pair | None:
        """A copy of one of the image's own objects (``None``: not annotated, or no place)."""
        from dcgd.data.coco import same_image_pair

        instances_of = getattr(self.cutouts, "instances_of", None)
        indices = instances_of(item.id) if instances_of is not None else []
        if not indices:
            return None
        try:
            return same_image_pair(
                item.image,
                self.cutouts,
                indices,
                self.size,
                rng,
                self.pairs.paste_dilation,
                self.buckets[bucket],
            )
        except DataError as err:
            skipped.append(f"cut-out: {err}")
            return None

    def _mask(self, bucket: int, index: int, rng: np.random.Generator) -> np.ndarray:
        size = (self.size, self.size)
        if self.mask_folder is not None:
            return self.mask_folder.pick(rng, size, self.buckets, bucket)
        if not self.train:
            # Mask number k of its bucket: for the test split, the k-th mask that
            # `python -m dcgd masks --bucket <b> --seed <seed>` writes.
            k = index // len(self.buckets)
            return eval_mask(
                k, self.seed, size, self.buckets[bucket], self.pairs.masks, self.split_id
            )
        return generate_mask(rng, size, self.buckets[bucket], self.pairs.masks)
