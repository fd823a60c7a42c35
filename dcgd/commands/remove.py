"""``python -m dcgd remove``: remove the masked objects from photographs with a trained model.

One image and its mask, or a folder of images and a folder of masks matched by name (the
path relative to the folder without its extension: ``a/b.jpg`` pairs with ``a/b.png``).
Any size and aspect: a context window around the mask runs at the model's resolution and is
pasted back under the mask only; every other pixel is written exactly as read (use a
lossless format such as PNG to keep it so).

Descriptions: ``--t-info`` / ``--t-mask`` give them; otherwise ``--describer`` (an open_clip
model name with ``--describer-pretrained``, or a directory saved by dcgd) describes each
window with CLIP (``ClipRegionDescriber``); with neither, the missing ones are "" and a
warning says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dcgd.data.images import IMAGE_EXTENSIONS, load_image_and_mask
from dcgd.errors import DataError, DCGDError, ModelLoadError
from dcgd.models.guidance import PROMPT_MODES
from dcgd.models.schedulers import SAMPLERS

HELP = "remove the masked objects from images with a trained model (.ckpt or exported dir)"

LOSSY = (".jpg", ".jpeg", ".webp")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a .ckpt written by 'python -m dcgd fit' or a directory written by 'dcgd export'",
    )
    parser.add_argument("--image", required=True, type=Path, help="an image, or a folder of them")
    parser.add_argument(
        "--mask",
        required=True,
        type=Path,
        help="its mask (white = remove), or a folder of masks with the images' names",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output file (one image, e.g. out.png) or folder (written as <name>.png)",
    )
    parser.add_argument("--prompt-mode", choices=PROMPT_MODES, help="default: the model's")
    parser.add_argument("--w", type=float, help="guidance weight of eq. 6 (default: the model's)")
    parser.add_argument("--steps", type=positive_int, help="sampling steps (default: the model's)")
    parser.add_argument("--seed", type=int, help="seed (default: the model's); per image name")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), help="default: the model's")
    parser.add_argument(
        "--dilate", type=int, default=0, help="grow each mask by N pixels first (default 0)"
    )
    parser.add_argument(
        "--context",
        type=float,
        default=2.0,
        help="window side as a multiple of the mask's box side (default 2)",
    )
    parser.add_argument(
        "--resolution",
        type=positive_int,
        help="side the model runs at (default: its training size)",
    )
    parser.add_argument("--t-info", help="positive prompt: what the image shows (all images)")
    parser.add_argument("--t-mask", help="negative prompt: the object to remove (all images)")
    parser.add_argument(
        "--describer",
        help="open_clip model name (e.g. ViT-L-14) or directory that describes each image "
        "when --t-info / --t-mask are not given",
    )
    parser.add_argument(
        "--describer-pretrained", help="pretrained tag or checkpoint file of --describer"
    )
    parser.add_argument(
        "--no-ema", action="store_true", help="a .ckpt's raw weights instead of its EMA"
    )
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")


def index_folder(folder: Path) -> dict[str, Path]:
    """``{relative path without suffix: file}`` of the images under ``folder``."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    twice = {k: v for k, v in found.items() if len(v) > 1}
    if twice:
        key, paths = next(iter(twice.items()))
        raise DataError(
            f"{len(twice)} name(s) in {folder} have two files, e.g. {', '.join(map(str, paths))}; "
            "keep one file per name so each image pairs with one mask"
        )
    return {k: v[0] for k, v in found.items()}


def pairs(args: argparse.Namespace) -> list[tuple[str, Path, Path, Path]]:
    """``(key, image, mask, output)`` for every image to process."""
    image, mask, out = args.image, args.mask, args.out
    for path, what in ((image, "image"), (mask, "mask")):
        if not path.exists():
            raise DataError(f"{what} {path} does not exist")
    if image.is_file() != mask.is_file():
        raise DataError(
            f"give --image and --mask as two files or as two folders ({image} is "
            f"{'a file' if image.is_file() else 'a folder'}, {mask} is "
            f"{'a file' if mask.is_file() else 'a folder'})"
        )
    if image.is_file():
        target = out if out.suffix.lower() in IMAGE_EXTENSIONS else out / f"{image.stem}.png"
        return [(image.stem, image, mask, target)]
    if out.suffix.lower() in IMAGE_EXTENSIONS:
        raise DataError(f"--out {out} names a file, but --image is a folder: give a folder")
    images, masks = index_folder(image), index_folder(mask)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {image}")
    lonely = [k for k in images if k not in masks]
    if lonely:
        shown = ", ".join(lonely[:5]) + (f" and {len(lonely) - 5} more" if len(lonely) > 5 else "")
        raise DataError(
            f"{len(lonely)} image(s) in {image} have no mask of the same name in {mask}: {shown}"
        )
    return [(k, images[k], masks[k], out / f"{k}.png") for k in images]


def build_describer(args: argparse.Namespace):
    if not args.describer:
        return None
    from dcgd.text.describer import ClipRegionDescriber

    describer = ClipRegionDescriber(
        clip_model=args.describer, clip_pretrained=args.describer_pretrained
    )
    _ = describer.clip  # load now: a wrong model name fails before any image is processed
    return describer


def run(args: argparse.Namespace) -> int:
    import torch

    from dcgd.sampling.pipeline import load_pipeline
    from dcgd.sampling.remover import Remover

    if not args.checkpoint.exists():
        raise ModelLoadError(
            f"checkpoint {args.checkpoint} does not exist; give a .ckpt written by 'python -m "
            "dcgd fit' (e.g. runs/<name>/checkpoints/last.ckpt) or a folder from 'dcgd export'"
        )
    todo = pairs(args)
    if len(todo) == 1:  # one image: a bad image or mask fails before the model loads
        load_image_and_mask(todo[0][1], todo[0][2])
    if any(out.suffix.lower() in LOSSY for *_, out in todo):
        print("note: a lossy format changes pixels outside the mask too; use PNG to keep them")

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DCGDError(f"--device {device}: no CUDA device is available here; use --device cpu")
    pipeline = load_pipeline(args.checkpoint, use_ema=not args.no_ema).to(device)
    sampling = {
        k: v
        for k, v in {
            "prompt_mode": args.prompt_mode,
            "w": args.w,
            "steps": args.steps,
            "seed": args.seed,
            "sampler": args.sampler,
        }.items()
        if v is not None
    }
    remover = Remover(
        pipeline,
        dilate=args.dilate,
        context=args.context,
        resolution=args.resolution,
        t_info=args.t_info,
        t_mask=args.t_mask,
        describer=build_describer(args),
        sampling=sampling,
    )
    missing = remover.missing_descriptions()
    if missing:
        print(
            f"warning: prompt mode {remover.prompt_mode!r} uses {' and '.join(missing)} but "
            "none was given: using empty prompts. Give --t-info / --t-mask, or --describer "
            "<open_clip model> to describe each image with CLIP.",
            file=sys.stderr,
        )

    failed = []
    for key, image_path, mask_path, out_path in tqdm(todo, desc="remove", unit="image"):
        try:
            image, mask = load_image_and_mask(image_path, mask_path)
            result = remover(image, mask, key=key)
        except DCGDError as err:
            if len(todo) == 1:
                raise
            failed.append(f"{key}: {err}")
            continue
        out_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(result.image)).save(out_path)
    done = len(todo) - len(failed)
    where = todo[0][3] if len(todo) == 1 else args.out
    print(f"dcgd remove: {done} of {len(todo)} image(s) written to {where}")
    for line in failed:
        print(f"  skipped {line}", file=sys.stderr)
    return 1 if failed else 0
