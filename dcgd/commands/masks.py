"""``python -m dcgd masks``: write the evaluation masks of a ratio bucket as PNG files.

Mask ``k`` written here is mask ``k`` of that bucket in the test split of
:class:`dcgd.data.datamodule.InpaintingDataModule` with the same seed, size and mask settings
(test sample ``k · len(buckets) + b`` when it is a hole pair), so other methods can be scored
on exactly the masks DCGD is tested on. White (255) = remove / fill, black (0) = keep.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from dcgd.data.buckets import PAPER_BUCKETS, Bucket, parse_bucket
from dcgd.data.masks import MASK_KINDS, MaskSettings, eval_mask
from dcgd.errors import ConfigError, DataError

HELP = "write the test set's masks of a mask-ratio bucket as PNGs (white = remove)"

PROGRESS_FROM = 200  # masks: below this a progress bar is noise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="folder to write the PNGs into")
    parser.add_argument("--count", required=True, type=int, help="masks per bucket")
    parser.add_argument("--size", type=int, default=512, help="side in pixels (default 512)")
    parser.add_argument(
        "--bucket",
        required=True,
        help="mask-ratio bucket LO-HI, e.g. 0.1-0.2; 'all' writes the paper's four buckets "
        "into one sub-folder each",
    )
    parser.add_argument("--seed", type=int, default=0, help="the data module's seed (default 0)")
    parser.add_argument(
        "--kind", choices=MASK_KINDS, default="mixed", help="shapes drawn (default mixed)"
    )
    parser.add_argument(
        "--box-probability",
        type=float,
        default=0.25,
        help="share of boxes among the shapes of 'mixed' masks (default 0.25)",
    )
    parser.add_argument(
        "--dilation", type=int, default=0, help="grow each mask by this many pixels"
    )
    parser.add_argument(
        "--feather", type=int, default=0, help="round jagged edges (Gaussian radius, pixels)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the masks of a folder written before"
    )


def _buckets(text: str) -> list[Bucket]:
    if text == "all":
        return list(PAPER_BUCKETS)
    try:
        return [parse_bucket(text)]
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _prepare(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--out {folder} is a file; give a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise DataError(
                f"--out {folder} is not empty; choose a new folder, or pass --overwrite to "
                "replace the masks written there before"
            )
        # Only what this command writes: stale masks from a larger --count must not survive.
        for old in [*folder.glob("[0-9]*.png"), folder / "masks.json"]:
            old.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)


def write_masks(
    out: Path,
    bucket: Bucket,
    count: int,
    size: int,
    seed: int,
    settings: MaskSettings,
    progress: bool = True,
) -> list[float]:
    """Write masks ``0..count-1`` of ``bucket`` as ``out/000000.png``...; their ratios."""
    ratios = []
    show = progress and count >= PROGRESS_FROM
    for k in tqdm(range(count), desc=f"masks {bucket.name}", unit="mask", disable=not show):
        mask = eval_mask(k, seed, (size, size), bucket, settings, split=0)
        path = out / f"{k:06d}.png"
        if not cv2.imwrite(str(path), mask * 255):
            raise DataError(f"could not write {path}; check the folder is writable")
        ratios.append(float(mask.mean()))
    settings_file = {
        "bucket": bucket.name,
        "count": count,
        "size": size,
        "seed": seed,
        "split": "test",
        "kind": settings.kind,
        "box_probability": settings.box_probability,
        "dilation": settings.dilation,
        "feather": settings.feather,
        "mean_ratio": sum(ratios) / count,
        "white": "remove",
    }
    (out / "masks.json").write_text(json.dumps(settings_file, indent=2) + "\n")
    return ratios


def run(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise ConfigError(f"--count must be at least 1; got {args.count}")
    if args.size < 16:
        raise ConfigError(f"--size must be at least 16 pixels; got {args.size}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be non-negative; got {args.seed}")
    try:
        settings = MaskSettings(args.kind, args.box_probability, args.dilation, args.feather)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    buckets = _buckets(args.bucket)
    for bucket in buckets:
        folder = args.out / bucket.name if len(buckets) > 1 else args.out
        _prepare(folder, args.overwrite)
        ratios = write_masks(folder, bucket, args.count, args.size, args.seed, settings)
        print(
            f"wrote {args.count} masks of bucket {bucket.name} ({args.size}x{args.size}, seed "
            f"{args.seed}, mean ratio {sum(ratios) / len(ratios):.3f}) to {folder}",
            file=sys.stdout,
        )
    return 0
