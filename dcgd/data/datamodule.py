"""``InpaintingDataModule``: masked pairs of Places365, Paris StreetView, a folder or built-in data.

Batches follow DESIGN.md §2: ``source`` / ``target`` ``[B,3,H,W]`` in [-1,1], ``mask``
``[B,1,H,W]`` in {0,1}, ``mask_ratio`` ``[B]``, ``bucket`` ``[B]`` (index into ``buckets``,
-1 outside), ``id``, ``kind`` (hole / paste), ``object_label`` / ``scene_label`` (what the
dataset knows, "" otherwise) and, with a describer, ``t_info`` / ``t_mask``, attached on the
device after transfer so CLIP runs batched on the GPU (and read from the cache when one is
set).

DDP: the training sampler gives each rank a disjoint shard of a per-epoch permutation; the
validation and test sets are pure functions of ``seed``, identical whatever the world size.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from dcgd.data.buckets import BUCKET_NAMES, parse_bucket
from dcgd.data.cutouts import build_cutouts
from dcgd.data.dataset import InpaintingDataset, PairSettings
from dcgd.data.masks import MaskFolder, MaskSettings
from dcgd.data.sources import build_source
from dcgd.errors import ConfigError, DataError
from dcgd.text.describer_base import Describer, attach_descriptions

DATASETS = ("procedural", "photos", "places365", "paris", "folder")


class EpochSampler(DistributedSampler):
    """A rank's shard of a seeded per-epoch permutation, yielding *virtual* indices
    ``epoch · len + i`` so that the dataset draws new random pairs every epoch.

    ``skip`` drops the first samples of the first epoch it serves: a run resumed mid-epoch
    continues exactly where the killed one stopped. A ``DistributedSampler`` so Lightning
    calls ``set_epoch`` and does not wrap it again under DDP.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, skip: int = 0) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = skip

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        offset = self.epoch * len(self.dataset)
        return iter([offset + i for i in indices[skip:]])


class InpaintingDataModule(L.LightningDataModule):
    """Masked image pairs for training and Table-1 evaluation.

    Args:
        dataset: ``procedural`` (built-in scenes, no download), ``photos`` (photographs shipped
            in scikit-image / scikit-learn), ``places365``, ``paris`` or ``folder``.
        root: dataset folder (places365: torchvision layout or easyformat; paris: the folder
            holding ``paris_train_original/`` and ``paris_eval_gt/``; folder: any images,
            split by ``train/ val/ test/`` sub-folders when present).
        size: working resolution (square crops; the paper: 512).
        batch_size: per device (global batch = batch_size x devices x nodes).
        paste_probability: share of object-removal (paste) pairs; 0 = classic inpainting.
        cutouts: objects to paste: ``procedural``, a folder of RGBA PNGs, or an image folder
            used with ``cutout_masks`` (instance masks of the same names).
        same_class_probability: procedural data: chance that the pasted object looks like
            the ones already in the scene (the hard case of the paper).
        paste_dilation: pixels a pasted object's footprint grows to make its mask.
        mask_kind / box_probability / mask_dilation / mask_feather: generated hole masks.
        mask_folder / invert_masks: read hole masks from a folder (e.g. NVIDIA irregular masks).
        buckets: mask-ratio buckets, ``LO-HI`` strings (the paper's four by default).
        train_length: samples per epoch of the built-in sources (procedural, photos).
        val_per_bucket / test_per_bucket: fixed evaluation samples per bucket.
        seed: fixes the evaluation sets and the training stream.
        describer: what writes ``t_info`` / ``t_mask`` (e.g. ``LabelDescriber`` for the built-in
            data, ``ClipRegionDescriber`` for real data); ``None`` leaves batches undescribed.
        description_cache: folder of the description cache (rank 0 writes, others read).
        places_small: Places365 256 px images (``data_256_standard``) rather than large.
        num_workers / pin_memory / persistent_workers / prefetch_factor: DataLoader settings.
    """

    def __init__(
        self,
        dataset: str = "procedural",
        root: str | None = None,
        size: int = 64,
        batch_size: int = 8,
        paste_probability: float = 0.5,
        cutouts: str | None = "procedural",
        cutout_masks: str | None = None,
        same_class_probability: float = 0.5,
        paste_dilation: int = 3,
        mask_kind: str = "mixed",
        box_probability: float = 0.25,
        mask_dilation: int = 0,
        mask_feather: int = 0,
        mask_folder: str | None = None,
        invert_masks: bool = False,
        buckets: list[str] | None = None,
        train_length: int | None = None,
        val_per_bucket: int = 4,
        test_per_bucket: int = 25,
        seed: int = 0,
        describer: Describer | None = None,
        description_cache: str | None = None,
        places_small: bool = True,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int | None = 2,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ConfigError(f"data.dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
        if not 0.0 <= paste_probability <= 1.0:
            raise ConfigError(f"paste_probability must be in [0, 1]; got {paste_probability}")
        if size < 8 or size % 8:
            raise ConfigError(
                f"size must be a multiple of 8 (the VAE and U-Net downsample); got {size}"
            )
        try:
            self.buckets = tuple(parse_bucket(b) for b in (buckets or BUCKET_NAMES))
            mask_settings = MaskSettings(mask_kind, box_probability, mask_dilation, mask_feather)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if dataset in ("places365", "paris", "folder"):
            if root is None:
                raise ConfigError(f"dataset {dataset} needs data.root (the folder that holds it)")
            from pathlib import Path

            if not Path(root).expanduser().is_dir():
                raise DataError(
                    f"data root {root} does not exist; point data.root at the {dataset} folder "
                    "(see README: 'From the quick start to real data')"
                )
        self.dataset_name = dataset
        self.root = root
        self.size = size
        self.batch_size = batch_size
        self.pairs = PairSettings(paste_probability, paste_dilation, mask_settings)
        self.cutout_spec = (cutouts, cutout_masks, same_class_probability)
        self.mask_folder_spec = (mask_folder, invert_masks)
        self.train_length = train_length
        self.per_bucket = {"val": val_per_bucket, "test": test_per_bucket}
        self.seed = seed
        self.places_small = places_small
        self.loader_settings = {
            "num_workers": num_workers,
            "pin_memory": pin_memory and torch.cuda.is_available(),
            "persistent_workers": persistent_workers and num_workers > 0,
            "prefetch_factor": prefetch_factor if num_workers > 0 else None,
        }
        self.describer = describer
        if describer is not None and description_cache is not None:
            from dcgd.text.cache import CachedDescriber

            self.describer = CachedDescriber(describer, description_cache, write="rank0")
        self.datasets: dict[str, InpaintingDataset] = {}
        self.skipped_files: list[str] = []

    # ------------------------------------------------------------------ datasets
    def dataset(self, split: str) -> InpaintingDataset:
        """The dataset of ``split`` (train / val / test / predict = test), built on first use."""
        split = "test" if split == "predict" else split
        if split not in self.datasets:
            cutouts = None
            if self.pairs.paste_probability > 0:
                cutouts = build_cutouts(*self.cutout_spec)
            folder, invert = self.mask_folder_spec
            source = build_source(
                self.dataset_name, split, self.root, self.size, self.train_length, self.places_small
            )
            self.datasets[split] = InpaintingDataset(
                source,
                split,
                self.size,
                self.buckets,
                self.pairs,
                cutouts=cutouts,
                mask_folder=MaskFolder(folder, invert) if folder else None,
                seed=self.seed,
                per_bucket=self.per_bucket.get(split),
            )
        return self.datasets[split]

    def setup(self, stage: str) -> None:
        splits = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }
        for split in splits.get(stage, ()):
            self.dataset(split)

    def _loader(self, dataset: InpaintingDataset, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=sampler is not None,
            **self.loader_settings,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        world, rank = self._world()
        if len(dataset) < self.batch_size * world:
            raise DataError(
                f"the training set has {len(dataset)} images, fewer than one global batch "
                f"({self.batch_size} x {world} devices)"
            )
        sampler = EpochSampler(dataset, world, rank, self.seed, skip=self._resume_skip())
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"))

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _resume_skip(self) -> int:
        """Samples this rank already consumed in the current epoch of a resumed run."""
        trainer = self.trainer
        if trainer is None or not trainer.fit_loop.restarting:
            return 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        return done * self.batch_size

    # ------------------------------------------------------------------ per batch
    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        skipped = batch.pop("skipped", None)
        if skipped:
            self.skipped_files += [line for text in skipped for line in text.splitlines() if line]
        return attach_descriptions(batch, self.describer)


class SkippedFilesReport(L.Callback):
    """Reports the unreadable files the data module skipped, at the end of each epoch."""

    def __init__(self) -> None:
        self.reported = 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        skipped = getattr(datamodule, "skipped_files", None)
        if not skipped or len(skipped) == self.reported:
            return
        new = skipped[self.reported :]
        self.reported = len(skipped)
        # Per rank, no sync: ranks skip different files (a collective here could hang).
        pl_module.log("data/skipped_files", float(len(skipped)), rank_zero_only=False)
        shown = "\n  ".join(new[:20])
        more = f"\n  ... and {len(new) - 20} more" if len(new) > 20 else ""
        print(
            f"dcgd (rank {trainer.global_rank}): skipped {len(new)} unreadable image(s) this "
            f"epoch, each replaced by the next image; fix or remove them:\n  {shown}{more}",
            flush=True,
        )
