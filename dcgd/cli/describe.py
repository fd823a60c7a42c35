"""``python -m dcgd describe``: fill the description cache of a dataset before training.

Reads the ``data`` section (dataset and describer) of the same config(s) ``fit`` uses, runs the
describer over the chosen splits in batches (on the GPU when there is one) and writes the
descriptions to the cache that training reads (``data.description_cache``, or ``--cache``).

Resumable: descriptions are written in shards, each atomically (temporary file + rename), so
a killed run loses at most the shard in progress, and a rerun computes only what is missing.
A rerun still loads every sample (its cache key is a hash of its pixels and mask), but runs
no CLIP on the samples already described.

Training pairs are redrawn every epoch (new masks, new pastes), so a training epoch's
descriptions serve that epoch only: ``--epochs N`` fills the first N epochs of a run with the
config's seed; later epochs are described on the fly.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from dcgd.cli.options import add_device_argument
from dcgd.data.config import build_datamodule
from dcgd.describe.base import Describer
from dcgd.describe.cache import CachedDescriber, cache_folder
from dcgd.devices import resolve_device
from dcgd.errors import ConfigError
from dcgd.files import read_yaml
from dcgd.validation import whole

if TYPE_CHECKING:
    from dcgd.data.datamodule import InpaintingDataModule
    from dcgd.data.dataset import InpaintingDataset

HELP = "fill the description cache (T_info / T_mask) of a config's dataset; resumable"

SPLITS = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        type=Path,
        help="the fit config(s); only the data section is used (repeat to compose, last wins)",
    )
    parser.add_argument(
        "--split",
        nargs="+",
        choices=SPLITS,
        default=list(SPLITS),
        help="splits to describe (default: all three)",
    )
    parser.add_argument(
        "--cache", type=Path, help="cache folder (default: the config's data.description_cache)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="training epochs to describe (training pairs change every epoch; default 1)",
    )
    parser.add_argument("--limit", type=int, help="describe at most this many samples per split")
    parser.add_argument("--batch-size", type=int, help="default: the config's data.batch_size")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    add_device_argument(parser)
    parser.add_argument(
        "--shard-size",
        type=int,
        default=1024,
        help="descriptions per shard file: what a killed run can lose at most",
    )


# ---------------------------------------------------------------------- config
def _merge(base: Any, override: Any) -> Any:
    """Later config wins; a subclass section with another class_path replaces the earlier."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    if (
        "class_path" in base
        and override.get("class_path", base["class_path"]) != base["class_path"]
    ):
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if key in base else value
    return merged


def read_data_section(configs: list[Path]) -> dict[str, Any]:
    """The merged ``data`` section of the config files."""
    data: Any = None
    for path in configs:
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        config = read_yaml(path, "config file") or {}
        if not isinstance(config, dict):
            raise ConfigError(f"config file {path} must be a mapping with a data section")
        if "data" in config:
            data = _merge(data, config["data"]) if data is not None else config["data"]
    if not isinstance(data, dict) or "class_path" not in data:
        raise ConfigError(
            "the config has no data section with a class_path (e.g. "
            "dcgd.data.datamodule.InpaintingDataModule); describe reads the data of a fit config"
        )
    return data


def _describer_and_cache(
    datamodule: InpaintingDataModule, cache: Path | None
) -> tuple[Describer, str]:
    describer = getattr(datamodule, "describer", None)
    configured = None
    if isinstance(describer, CachedDescriber):
        configured, describer = describer.cache_dir, describer.describer
    if describer is None:
        raise ConfigError(
            "the config's data section has no describer: set data.init_args.describer "
            "(e.g. class_path: dcgd.describe.clip_describer.ClipRegionDescriber)"
        )
    cache_dir = str(cache) if cache is not None else configured
    if cache_dir is None:
        raise ConfigError(
            "no cache folder: give --cache DIR or set data.init_args.description_cache"
        )
    return describer, cache_dir


# ---------------------------------------------------------------------- describing
@dataclass
class SplitReport:
    split: str
    samples: int = 0
    computed: int = 0
    from_cache: int = 0
    skipped_files: int = 0


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def split_indices(
    dataset: InpaintingDataset, split: str, epochs: int, limit: int | None
) -> list[int]:
    """The sample indices a run reads: training uses virtual indices ``epoch · len + i``
    (what ``EpochSampler`` yields), evaluation splits their fixed samples."""
    count = len(dataset) * (epochs if split == "train" else 1)
    return list(range(count if limit is None else min(limit, count)))


def describe_splits(
    datamodule: InpaintingDataModule,
    describer: Describer,
    cache_dir: str,
    splits: list[str],
    epochs: int = 1,
    limit: int | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    shard_size: int = 1024,
    progress: bool = True,
) -> list[SplitReport]:
    """Describe ``splits`` into the cache; returns what was computed and what was read."""
    device = torch.device(device)
    cached = CachedDescriber(describer, cache_dir, write="always", shard_size=shard_size)
    reports = []
    try:
        for split in splits:
            dataset = datamodule.dataset(split)
            indices = split_indices(dataset, split, epochs, limit)
            loader = DataLoader(
                Subset(dataset, indices),
                batch_size=batch_size or datamodule.batch_size,
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
            )
            report = SplitReport(split)
            bar = tqdm(loader, desc=f"describe {split}", unit="batch", disable=not progress)
            for batch in bar:
                report.skipped_files += sum(bool(s) for s in batch.pop("skipped", []))
                before_computed, before_hits = cached.computed, cached.hits
                cached.describe(_to_device(batch, device))
                report.computed += cached.computed - before_computed
                report.from_cache += cached.hits - before_hits
                report.samples += len(batch["source"])
                bar.set_postfix(computed=report.computed, cached=report.from_cache)
            reports.append(report)
    finally:
        cached.flush()  # also on Ctrl-C: keep what was computed
    return reports


def check_options(args: argparse.Namespace) -> None:
    """Numbers first, before the config is read or a model loaded."""
    whole("--epochs", args.epochs, 1)
    whole("--shard-size", args.shard_size, 1)
    whole("--num-workers", args.num_workers, 0)
    if args.limit is not None:
        whole("--limit", args.limit, 1)  # 0 would describe nothing and report success
    if args.batch_size is not None:
        whole("--batch-size", args.batch_size, 1)


def run(args: argparse.Namespace) -> int:
    check_options(args)
    datamodule = build_datamodule(read_data_section(args.config))
    describer, cache_dir = _describer_and_cache(datamodule, args.cache)
    device = resolve_device(args.device, option="--device")
    reports = describe_splits(
        datamodule,
        describer,
        cache_dir,
        list(dict.fromkeys(args.split)),
        epochs=args.epochs,
        limit=args.limit,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=device,
        shard_size=args.shard_size,
    )
    folder = cache_folder(cache_dir, describer.settings())
    for r in reports:
        skipped = f", {r.skipped_files} unreadable file(s) skipped" if r.skipped_files else ""
        print(
            f"{r.split}: {r.samples} samples, {r.computed} computed, "
            f"{r.from_cache} from cache{skipped}"
        )
    print(f"descriptions cached in {folder} (on {device})")
    return 0
