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
import numpy as np
from tqdm import tqdm

from dcgd.data.buckets import PAPER_BUCKETS, Bucket, parse_bucket
from dcgd.data.masks import MASK_KINDS, MaskSettings, eval_mask
from dcgd.errors import ConfigError, DataError
from dcgd.files import check_out_folder, write_atomic
from dcgd.validation import finite, whole

HELP = "write the test set's masks of a mask-ratio bucket as PNGs (white = remove)"

PROGRESS_FROM = 200  # masks: below this a progress bar is noise
MIN_SIZE, MAX_SIZE = 16, 8192  # pixels a side; 8192² is 64 MiB a mask, drawn per shape


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
        raise ConfigError(f"--bucket: {err}") from None


def _encode(mask: np.ndarray, path: Path) -> bytes:
    ok, data = cv2.imencode(".png", mask * 255)
    if not ok:
        raise DataError(f"could not encode {path} as PNG")
    return data.tobytes()


def write_masks(
    out: Path,
    bucket: Bucket,
    count: int,
    size: int,
    seed: int,
    settings: MaskSettings,
    progress: bool = True,
    first: np.ndarray | None = None,
) -> list[float]:
    """Write masks ``0..count-1`` of ``bucket`` as ``out/000000.png``...; their ratios.

    Each file is written whole (temporary file + rename). ``masks.json`` goes first out of the
    way and is written last: a folder without it is an incomplete set (a killed run), never
    mistaken for a finished one. Masks of an earlier, larger ``--count`` are removed at the end.
    ``first``: mask 0, when the caller drew it already.
    """
    settings_path = out / "masks.json"
    settings_path.unlink(missing_ok=True)
    ratios = []
    show = progress and count >= PROGRESS_FROM
    for k in tqdm(range(count), desc=f"masks {bucket.name}", unit="mask", disable=not show):
        if k == 0 and first is not None:
            mask = first
        else:
            mask = eval_mask(k, seed, (size, size), bucket, settings, split=0)
        path = out / f"{k:06d}.png"
        write_atomic(path, _encode(mask, path))
        ratios.append(float(mask.mean()))
    keep = {f"{k:06d}.png" for k in range(count)}
    for stale in out.glob("[0-9]*.png"):  # only what this command writes
        if stale.name not in keep:
            stale.unlink()
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
    write_atomic(settings_path, json.dumps(settings_file, indent=2) + "\n")
    return ratios


def run(args: argparse.Namespace) -> int:
    whole("--count", args.count, 1)
    whole("--size", args.size, MIN_SIZE, MAX_SIZE)
    whole("--seed", args.seed, 0)
    # A dilation or feather past the side covers the whole image whatever is drawn (and a
    # huge one would build a kernel of that size before failing).
    whole("--dilation", args.dilation, 0, args.size)
    whole("--feather", args.feather, 0, args.size)
    finite("--box-probability", args.box_probability, 0, 1)
    try:
        settings = MaskSettings(args.kind, args.box_probability, args.dilation, args.feather)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    buckets = _buckets(args.bucket)
    folders = [args.out / b.name if len(buckets) > 1 else args.out for b in buckets]
    # Every folder is checked, and every bucket's first mask drawn, before anything is written
    # or removed: settings that cannot work fail with the old masks still in place.
    for folder in folders:
        check_out_folder(folder, "--out", args.overwrite, "masks")
    firsts = [eval_mask(0, args.seed, (args.size,) * 2, b, settings, split=0) for b in buckets]
    for bucket, folder, first in zip(buckets, folders, firsts, strict=True):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"could not create --out {folder}: {err.strerror or err}") from None
        ratios = write_masks(
            folder, bucket, args.count, args.size, args.seed, settings, first=first
        )
        print(
            f"wrote {args.count} masks of bucket {bucket.name} ({args.size}x{args.size}, seed "
            f"{args.seed}, mean ratio {sum(ratios) / len(ratios):.3f}) to {folder}",
            file=sys.stdout,
        )
    return 0
