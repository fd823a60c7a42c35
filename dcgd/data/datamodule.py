"""``InpaintingDataModule``: masked pairs of Places365, Paris StreetView, a folder or built-in data.

Batches follow DESIGN.md §2: ``source`` / ``target`` ``[B,3,H,W]`` in [-1,1], ``mask``
``[B,1,H,W]`` in {0,1}, ``hidden`` ``[B,1,H,W]`` in {0,1} (⊆ ``mask``: the pixels whose target
``source`` does not show, the whole mask of a hole pair, the opaque object of a paste pair;
for the leak test, never a model input), ``mask_ratio`` ``[B]``, ``bucket`` ``[B]`` (index
into ``buckets``, -1 outside), ``id``, ``kind`` (hole / paste), ``object_label`` /
``scene_label`` (what the dataset knows, "" otherwise) and, with a describer, ``t_info`` /
``t_mask``.

Descriptions are made in the data path: the loaders' collate step (``dcgd.data.collate``)
describes each batch where it is made, in the DataLoader worker (or the main process with
``num_workers: 0``), on the CPU, so any plain loop over ``val_dataloader()`` yields described
batches, inside Lightning or not. At scale they come from the description cache
(``description_cache``), which ``python -m dcgd describe`` fills beforehand on a GPU; the
workers then only read it, and describe (CLIP on the CPU) just what it misses, written back
by global rank 0 alone.

DDP: the training sampler gives each rank a disjoint shard of a per-epoch permutation; the
validation and test sets are pure functions of ``seed``, identical whatever the world size.

Splits: validation never shares an image with test. It is carved from the TRAINING images:
an image is a validation image when ``sha256("dcgd-val-v1/" + id)`` (its id: the path under
the dataset's folder) falls in the lowest 1% (the lowest hash alone when no image does, in a
small folder); training leaves the slice out (``dcgd.data.sources.validation_slice``). A
function of each image's id alone, not of the file order, the RNG or ``seed``: the same on
every machine, world size and file system. Test reads the held-out images: Places365's
official val set, Paris' ``paris_eval_gt/``, a folder's ``test/`` (else ``val/``); an unsplit
folder has no held-out images, so its test split is the training images (val still apart).
The built-in sources (procedural, photos) draw each split from its own seeded stream
(``dataset.SPLIT_IDS``): procedural scenes differ between splits; the eight built-in photos
are shared, in different crops and masks (a demo set, not a benchmark).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from dcgd.data.buckets import BUCKET_NAMES, parse_bucket
from dcgd.data.collate import DescribeCollate
from dcgd.data.cutouts import build_cutouts
from dcgd.data.dataset import InpaintingDataset, PairSettings
from dcgd.data.masks import MaskFolder, MaskSettings
from dcgd.data.paired import PairedDataset
from dcgd.data.sources import build_source
from dcgd.describe.base import Describer
from dcgd.describe.cache import CachedDescriber, global_rank
from dcgd.errors import ConfigError, DataError
from dcgd.validation import finite, whole

DATASETS = ("procedural", "photos", "places365", "paris", "folder", "pairs")
PHOTO_DATASETS = ("places365", "paris", "folder")  # real photographs: no objects of their own


def _one_thread_worker(worker_id: int) -> None:
    """Workers are the parallelism: OpenCV's own threads in each would oversubscribe the CPU
    (torch already runs one thread per worker).

    A forked worker inherits the parent's setting (made single-threaded in ``_loader``) and
    must not touch OpenCV's thread pool: reconfiguring a pool whose threads did not survive
    the fork can deadlock (seen here). Spawned workers start fresh and set it themselves.
    """
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


class EpochSampler(DistributedSampler):
    """A rank's shard of a seeded per-epoch permutation, yielding *virtual* indices
    ``epoch · len + i`` so that the dataset draws new random pairs every epoch.

    Shards are disjoint: rank ``r`` of ``W`` takes every ``W``-th index of the same permutation
    (``DistributedSampler`` with ``drop_last``, so every rank has as many samples). ``skip``
    drops the first ``skip`` samples of epoch ``skip_epoch`` only: a run resumed mid-epoch
    continues exactly where the killed one stopped. ``len()`` stays the full shard, because
    Lightning counts a resumed epoch's batches from where it stopped, too. A
    ``DistributedSampler`` so Lightning calls ``set_epoch`` and does not wrap it again.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        seed: int,
        skip: int = 0,
        skip_epoch: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = skip
        self.skip_epoch = skip_epoch

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self.epoch == self.skip_epoch:
            indices = indices[self.skip :]
        offset = self.epoch * len(self.dataset)
        return iter([offset + i for i in indices])


class InpaintingDataModule(L.LightningDataModule):
    """Masked image pairs for training and Table-1 evaluation.

    Args:
        dataset: ``procedural`` (built-in scenes, no download), ``photos`` (photographs shipped
            in scikit-image / scikit-learn), ``places365``, ``paris``, ``folder``, or ``pairs``:
            real removal pairs ``source/ mask/ target/`` for test (and val from its ``val/``),
            read as they are (``dcgd.data.paired``; cut-outs and masks are not used; ``fit``
            is refused).
        root: dataset folder (places365: torchvision layout or easyformat; paris: the folder
            holding ``paris_train_original/`` and ``paris_eval_gt/``; folder: any images,
            split by ``train/ test/`` sub-folders when present, test falling back to ``val/``;
            otherwise every split reads the whole folder). Validation is always a fixed 1%
            slice carved from the training images (see the module docstring).
        size: working resolution (square crops; the paper: 512).
        batch_size: per device (global batch = batch_size x devices x nodes).
        paste_probability: share of object-removal (paste) pairs; 0 = classic inpainting.
        cutouts: objects to paste: ``procedural``, a folder of RGBA PNGs, an image folder
            used with ``cutout_masks`` (instance masks of the same names), or COCO-format
            instance annotations ``{coco: instances_*.json, images: <folder>, categories:
            [names], min_area: 64, cache: <folder>}`` (``dcgd.data.coco``; the category name
            is the object label; needs ``pip install pycocotools``). ``None``: the
            procedural objects for the built-in data; with a real-photo dataset (places365,
            paris, folder) and ``paste_probability > 0`` it is refused at construction, so a
            removal config never trains hole-only or on objects nobody chose.
        same_class_probability: procedural data: chance that the pasted object looks like
            the ones already in the scene (the hard case of the paper).
        same_image_probability: share of paste pairs that copy one of the image's own
            annotated objects elsewhere in it, its twin staying (Fig. 7 on real photos);
            needs COCO ``cutouts`` annotating the dataset's images (matched by file name).
        paste_dilation: pixels a pasted object's footprint grows to make its mask.
        mask_kind / box_probability / mask_dilation / mask_feather: generated hole masks.
        mask_folder / invert_masks: read hole masks from a folder (e.g. NVIDIA irregular masks).
        buckets: mask-ratio buckets, ``LO-HI`` strings (the paper's four by default).
        train_length: samples per epoch of the built-in sources (procedural, photos).
        val_per_bucket / test_per_bucket: fixed evaluation samples per bucket.
        seed: fixes the evaluation sets and the training stream.
        describer: what writes ``t_info`` / ``t_mask`` (e.g. ``LabelDescriber`` for the built-in
            data, ``ClipRegionDescriber`` for real data), run by the loaders' collate step in
            the DataLoader workers, on the CPU; ``None`` leaves batches undescribed.
        description_cache: folder of the description cache; fill it on a GPU beforehand with
            ``python -m dcgd describe --config <this config>`` (at scale, CLIP in the workers
            is too slow). What it misses is described on the fly, and written back by global
            rank 0 only; the other ranks read.
        places_small: Places365 256 px images (``data_256_standard``) rather than large.
        num_workers / pin_memory / persistent_workers / prefetch_factor: DataLoader settings.

    Unreadable files are skipped and reported at the end of each epoch (the data module adds
    :class:`SkippedFilesReport` to the trainer). A run resumed from any checkpoint continues
    with exactly the samples the interrupted run would have drawn (see :meth:`state_dict`).
    """

    def __init__(
        self,
        dataset: str = "procedural",
        root: str | None = None,
        size: int = 64,
        batch_size: int = 8,
        paste_probability: float = 0.5,
        cutouts: str | dict | None = "procedural",
        cutout_masks: str | None = None,
        same_class_probability: float = 0.5,
        same_image_probability: float = 0.0,
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
        # Every number before any work: a NaN probability or a dilation wider than the image
        # would otherwise surface as an odd sample or a search that cannot end, hours later.
        for name, value in (
            ("paste_probability", paste_probability),
            ("same_class_probability", same_class_probability),
            ("same_image_probability", same_image_probability),
            ("box_probability", box_probability),
        ):
            finite(name, value, 0, 1)
        whole("size", size, 8)
        if size % 8:
            raise ConfigError(
                f"size must be a multiple of 8 (the VAE and U-Net downsample); got {size}"
            )
        whole("batch_size", batch_size, 1)
        whole("num_workers", num_workers, 0)
        whole("seed", seed, 0)
        for name, value in (
            ("paste_dilation", paste_dilation),
            ("mask_dilation", mask_dilation),
            ("mask_feather", mask_feather),
        ):
            whole(name, value, 0, size)  # past the side, every mask is the whole image
        if train_length is not None:
            whole("train_length", train_length, 1)
        if prefetch_factor is not None and num_workers > 0:
            whole("prefetch_factor", prefetch_factor, 1)
        if val_per_bucket < 1 or test_per_bucket < 1:
            raise ConfigError(
                "val_per_bucket and test_per_bucket must be >= 1 (to skip validation, set "
                f"trainer.limit_val_batches: 0); got {val_per_bucket} and {test_per_bucket}"
            )
        whole("val_per_bucket", val_per_bucket, 1)  # a count, not 2.5
        whole("test_per_bucket", test_per_bucket, 1)
        try:
            self.buckets = tuple(parse_bucket(b) for b in (buckets or BUCKET_NAMES))
        except ValueError as err:
            raise ConfigError(f"buckets: {err}") from None
        try:
            mask_settings = MaskSettings(mask_kind, box_probability, mask_dilation, mask_feather)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if dataset in ("places365", "paris", "folder", "pairs"):
            if root is None:
                raise ConfigError(f"dataset {dataset} needs data.root (the folder that holds it)")
            if not Path(root).expanduser().is_dir():
                raise DataError(
                    f"data root {root} does not exist; point data.root at the {dataset} folder "
                    "(see README: 'From the quick start to real data')"
                )
        if dataset == "pairs":
            paste_probability = 0.0  # the pairs are read, not made: no cut-outs needed
        if paste_probability > 0 and dataset in PHOTO_DATASETS:
            if cutouts is None:
                raise ConfigError(
                    f"paste_probability {paste_probability:g} on {dataset} needs a cut-out "
                    "source: set data.cutouts (a folder of RGBA PNGs, or images with "
                    "data.cutout_masks; 'procedural' for the built-in shapes), or "
                    "paste_probability: 0 for hole pairs only"
                )
            for name, folder in (("cutouts", cutouts), ("cutout_masks", cutout_masks)):
                if isinstance(folder, dict):
                    continue  # a COCO source: checked below
                if folder not in (None, "procedural") and not Path(folder).expanduser().is_dir():
                    raise DataError(
                        f"data.{name} {folder} does not exist; point it at a folder of "
                        "cut-outs (RGBA PNGs; see README: 'From the quick start to real data')"
                    )
        if isinstance(cutouts, dict):
            from dcgd.data.coco import check_coco_spec

            check_coco_spec(cutouts)
        if same_image_probability > 0 and paste_probability > 0 and not isinstance(cutouts, dict):
            raise ConfigError(
                f"same_image_probability {same_image_probability:g} copies an image's own "
                "annotated objects: set data.cutouts to {coco: <instances_*.json>, images: "
                "<folder>} annotating the dataset's images, or same_image_probability: 0"
            )
        self.dataset_name = dataset
        self.root = root
        self.size = size
        self.batch_size = batch_size
        self.pairs = PairSettings(
            paste_probability, paste_dilation, mask_settings, same_image_probability
        )
        self._cutouts = None  # built once, on first use, shared by the splits
        self.cutout_spec = (cutouts, cutout_masks, same_class_probability)
        self.mask_folder_spec = (mask_folder, invert_masks)
        self._mask_folder: MaskFolder | None = None  # one per data module: read once
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
            self.describer = CachedDescriber(describer, description_cache, write="rank0")
        self.datasets: dict[str, InpaintingDataset] = {}
        self.skipped_files: list[str] = []
        self._resume: dict[str, int] = {}  # where a resumed run stopped (see state_dict)

    # ------------------------------------------------------------------ datasets
    def dataset(self, split: str) -> InpaintingDataset | PairedDataset:
        """The dataset of ``split`` (train / val / test / predict = test), built on first use."""
        split = "test" if split == "predict" else split
        if split not in self.datasets and self.dataset_name == "pairs":
            paired = PairedDataset(self.root, split, self.size, self.buckets)
            self.skipped_files += [f"pair {line}" for line in paired.bad]
            self.datasets[split] = paired
        if split not in self.datasets:
            cutouts = None
            if self.pairs.paste_probability > 0:
                if self._cutouts is None:
                    self._cutouts = build_cutouts(*self.cutout_spec)
                    # Bad annotations (COCO) are reported with the unreadable files.
                    self.skipped_files += [
                        f"cut-out: {line}" for line in getattr(self._cutouts, "bad", [])
                    ]
                cutouts = self._cutouts
            folder, invert = self.mask_folder_spec
            if folder and self._mask_folder is None:
                self._mask_folder = MaskFolder(folder, invert)
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
                mask_folder=self._mask_folder,
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
        trainer = self.trainer
        if trainer is not None and not any(
            isinstance(c, SkippedFilesReport) for c in trainer.callbacks
        ):
            # Skipped files must be reported whatever callbacks the user's config lists.
            trainer.callbacks.append(SkippedFilesReport())

    def _loader(self, dataset: InpaintingDataset, sampler: Sampler | None = None) -> DataLoader:
        if self.loader_settings["num_workers"] > 0:
            cv2.setNumThreads(1)  # before forking: see _one_thread_worker
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=sampler is not None,
            # The rank is taken now, in this process: the workers may not be able to tell it.
            collate_fn=DescribeCollate(self.describer, self._global_rank()),
            worker_init_fn=_one_thread_worker,
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
        skip, skip_epoch = self._resume_position(world)
        sampler = EpochSampler(dataset, world, rank, self.seed, skip, skip_epoch)
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

    def _global_rank(self) -> int:
        """This process's global rank: the trainer's, else torch.distributed's (or ``RANK``)."""
        trainer = self.trainer
        return trainer.global_rank if trainer is not None else global_rank()

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict[str, int]:
        """Where training stands in its epoch, saved in every checkpoint.

        ``processed`` (not ``completed``) counts the batches this rank consumed: a checkpoint
        written in ``on_train_batch_end`` has processed the batch before completing it.
        """
        trainer = self.trainer
        if trainer is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {
            "epoch": trainer.current_epoch,
            "batches": progress.processed,
            "batch_size": self.batch_size,
            "world_size": trainer.world_size,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = dict(state_dict)

    def _resume_position(self, world: int) -> tuple[int, int]:
        """``(skip, epoch)``: samples of this rank's shard already seen in that epoch."""
        state = self._resume
        if not state:
            return 0, 0
        if (state["batch_size"], state["world_size"]) != (self.batch_size, world):
            rank_zero_warn(
                f"resuming with batch_size {self.batch_size} x {world} devices, the checkpoint "
                f"was written with {state['batch_size']} x {state['world_size']}: the "
                "interrupted epoch restarts from its first sample"
            )
            return 0, state["epoch"]
        return state["batches"] * self.batch_size, state["epoch"]

    # ------------------------------------------------------------------ per batch
    def record_skipped(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Move the batch's ``skipped`` (unreadable files) to :attr:`skipped_files`.

        Here in the main process, not in the collate step: a worker's copy of the data module
        is not this one, so the names travel in the batch.
        """
        skipped = batch.pop("skipped", None)
        if skipped:
            self.skipped_files += [line for text in skipped for line in text.splitlines() if line]
        return batch

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        # Bookkeeping only: describing is the loaders' collate step (dcgd.data.collate).
        return self.record_skipped(batch)


class SkippedFilesReport(L.Callback):
    """Reports the unreadable files the data module skipped, at the end of each epoch.

    The data module adds it to the trainer by itself. Training: printed (per rank, with no
    collective: ranks skip different files) and logged as ``data/skipped_files``, the count so
    far. Validation and test report theirs at their end.
    """

    def __init__(self) -> None:
        self.reported = 0

    def _report(self, trainer: L.Trainer, when: str) -> None:
        skipped = getattr(trainer.datamodule, "skipped_files", None) or []
        new = skipped[self.reported :]
        self.reported = len(skipped)
        if not new:
            return
        shown = "\n  ".join(new[:20])
        more = f"\n  ... and {len(new) - 20} more" if len(new) > 20 else ""
        print(
            f"dcgd (rank {trainer.global_rank}): skipped {len(new)} unreadable image(s) {when}, "
            f"each replaced by the next image; fix or remove them:\n  {shown}{more}",
            file=sys.stderr,
            flush=True,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, f"in epoch {trainer.current_epoch}")
        skipped = getattr(trainer.datamodule, "skipped_files", None)
        if skipped:
            pl_module.log("data/skipped_files", float(len(skipped)), rank_zero_only=False)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._report(trainer, "in validation")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, "in the test set")
