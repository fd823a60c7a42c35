"""``python -m dcgd remove``: remove the masked objects from photographs with a trained model.

One image and its mask, or a folder of images and a folder of masks matched by name (the
path relative to the folder without its extension: ``a/b.jpg`` pairs with ``a/b.png``).
Any size and aspect: a context window around the mask runs at the model's resolution and is
pasted back under the mask only; every other pixel is written exactly as read.

Descriptions: ``--prompts FILE`` gives them per image (CSV or JSON lines, see
``dcgd.data.prompt_file``), ``--t-info`` / ``--t-mask`` for every image; otherwise
``--describer`` (an open_clip model name with ``--describer-pretrained``, or a directory saved
by dcgd) describes each window with CLIP (``ClipRegionDescriber``); with none of them, the
missing ones are "" and a warning says so.

The rules (``RULES``, shown by ``--help``) on modes, files and folders are checked before the
model loads, so a run is refused in seconds, not after minutes of sampling.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from dcgd.cli.options import add_device_argument
from dcgd.components.schedulers import SAMPLERS
from dcgd.data.images import (
    IMAGE_EXTENSIONS,
    LOSSY_EXTENSIONS,
    KeptImage,
    check_mask,
    index_images,
    load_kept,
    load_mask,
    save_kept,
    writable,
)
from dcgd.data.prompt_file import read_prompt_file
from dcgd.errors import ConfigError, DataError, DCGDError, ModelLoadError
from dcgd.method.guidance import PROMPT_MODES

if TYPE_CHECKING:  # torch and the model load only when a run needs them (--help stays fast)
    from dcgd.describe.base import Describer
    from dcgd.sampling.pipeline import DCGDPipeline
    from dcgd.sampling.remover import Remover

HELP = "remove the masked objects from images with a trained model (.ckpt or exported dir)"

RULES = """\
images keep their mode and depth; no pixel outside the (dilated) mask changes:
  RGB, L (gray), 1 (black and white) and P (palette: the fill takes the nearest palette
  colour) are written back as they were; RGBA and LA keep their alpha channel untouched
  (only the colour under the mask is filled); 16-bit gray and 16-bit RGB/RGBA are filled at
  8 bits (what the model sees) and written at 16 bits, every pixel outside the mask with its
  original value. Refused with one line (convert to an RGB or RGBA PNG first): CMYK and other
  colour spaces, 32-bit or float pixels, palettes with a transparent colour, 16-bit gray with
  alpha, animations and multi-page files.
  --out must hold the mode: .png and .tif hold all of them, .webp RGB/RGBA (written
  lossless), .bmp RGB/L/1/P; .jpg (RGB/L) is lossy and changes pixels outside the mask too.

files: an input image or mask is never written over (not even with --overwrite); an existing
  output is replaced only with --overwrite; each result goes to a temporary file in its folder
  and is renamed into place, so an interrupted run never leaves a half-written image. In
  folder mode, results are <name>.png under --out and nothing is written outside it (--out
  may not be inside the --image or --mask folder). All of this is checked before the model
  loads.

folders: an image that cannot be used (unreadable or corrupt, not an image, no mask of its
  name, a mask of another size or empty, control characters in its name, a result that would
  leave --out) is skipped with one line saying why; the rest are done, then a summary
  "N done, M skipped".

exit status: 0 every image done; 1 some image(s) skipped; 2 an error (bad option, input or
  model; said in one line)."""

# Ranges of the numeric options: wide enough for any sensible run, narrow enough that a typo
# (or nan/inf) is refused at once instead of running for minutes and writing garbage.
STEPS = (1, 1000)  # the usual number of training timesteps; the model's own is checked too
W = (-100.0, 100.0)
SEED = (0, 2**63 - 1)  # per-image seeds are hashed from it: any value in range is as good
DILATE = (0, 1000)
CONTEXT = (1.0, 10.0)  # the window grows with it: 10x a large mask is already a huge crop
RESOLUTION = (8, 4096)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def bounded(option: str, kind: type, low: float, high: float) -> Callable[[str], int | float]:
    """An argparse ``type`` accepting a finite ``kind`` in ``[low, high]``.

    It raises :class:`ConfigError` (argparse lets it through), so a bad value ends as one
    ``error:`` line naming the option and its range, like every other user error.
    """
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        finite = value is not None and (kind is int or math.isfinite(value))
        if not finite or not low <= value <= high:
            raise ConfigError(
                f"{option} must be {noun} from {_number(low)} to {_number(high)}; got {text!r}"
            )
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep RULES' layout
    parser.epilog = RULES
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
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that already exist (an input image or mask is never replaced)",
    )
    parser.add_argument("--prompt-mode", choices=PROMPT_MODES, help="default: the model's")
    parser.add_argument(
        "--w",
        type=bounded("--w", float, *W),
        help=f"guidance weight of eq. 6, {W[0]:g} to {W[1]:g} (default: the model's)",
    )
    parser.add_argument(
        "--steps",
        type=bounded("--steps", int, *STEPS),
        help=f"sampling steps, {STEPS[0]} to {STEPS[1]} and at most the model's training "
        "timesteps (default: the model's)",
    )
    parser.add_argument(
        "--seed",
        type=bounded("--seed", int, *SEED),
        help="seed, 0 to 2**63-1 (default: the model's); each image's is drawn from it and "
        "its name",
    )
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), help="default: the model's")
    parser.add_argument(
        "--dilate",
        type=bounded("--dilate", int, *DILATE),
        default=0,
        help=f"grow each mask by N pixels first, {DILATE[0]} to {DILATE[1]} (default 0)",
    )
    parser.add_argument(
        "--context",
        type=bounded("--context", float, *CONTEXT),
        default=2.0,
        help=f"window side as a multiple of the mask's box side, {CONTEXT[0]:g} to "
        f"{CONTEXT[1]:g} (default 2)",
    )
    parser.add_argument(
        "--resolution",
        type=bounded("--resolution", int, *RESOLUTION),
        help=f"side the model runs at, {RESOLUTION[0]} to {RESOLUTION[1]} and a multiple of "
        "the model's downsampling (default: its training size)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the U-Net and VAE first (torch.compile, inductor): tens of seconds once "
        "on a CPU, then each image samples faster; worth it for a folder, not for one image",
    )
    parser.add_argument("--t-info", help="positive prompt: what the image shows (all images)")
    parser.add_argument("--t-mask", help="negative prompt: the object to remove (all images)")
    parser.add_argument(
        "--prompts",
        type=Path,
        help="per-image descriptions: a CSV (header name,t_info,t_mask) or JSON-lines file; "
        "name is the image's path in the --image folder, with or without its extension. "
        "An image it describes uses its entries over --t-info / --t-mask and the describer",
    )
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
    add_device_argument(parser)


# ---------------------------------------------------------------------------- planning
@dataclass
class Job:
    """One image to fill: its name (seeds it), input files and result file."""

    key: str
    image: Path
    mask: Path
    out: Path


@dataclass
class Plan:
    """What a run will do, decided before the model loads."""

    jobs: list[Job]
    skipped: list[str]  # one line each: "<name>: <why>"
    root: Path | None  # folder mode: nothing may be written outside it
    where: Path  # what the summary names
    loaded: dict[str, tuple[KeptImage, np.ndarray]]  # inputs already read (single mode)


def shown(text: str) -> str:
    """``text`` on one printable line: odd names are shown escaped (``ascii``)."""
    return ascii(text) if odd_name(text) else text


def odd_name(text: str) -> bool:
    """Control, invisible-format (e.g. right-to-left override) or undecodable characters:
    such a name garbles the report or the terminal, or spoofs another name."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in text)


def escaped(text: object) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``), so a report line stays one
    line and a file name in it keeps its exact content (``dcgd.errors.one_line`` would fold a
    newline into a space and let a terminal escape through)."""
    text = "".join(ascii(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in str(text))
    return text.encode("utf-8", "backslashreplace").decode()


def identity(path: Path) -> tuple[int, int] | None:
    """The file ``path`` leads to (device, inode), following links; None if there is none.

    Comparing identities catches every way of naming an input again: symlinks, hard links,
    ``..``, and case-insensitive file systems."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def within(path: Path, root: Path) -> bool:
    """Whether ``path`` (symlinks resolved) is ``root`` or under it."""
    return path.resolve().is_relative_to(root.resolve())


def prepare_folder(folder: Path) -> None:
    """Create ``folder`` and make sure results can be written there, before the model runs."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create the output folder {folder}: {err.strerror or err}; choose another --out"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"cannot write to {folder}: permission denied; choose another --out")


def plan_single(args: argparse.Namespace) -> Plan:
    image, mask, out = args.image, args.mask, args.out
    names_file = out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir()
    target = out if names_file else out / f"{image.stem}.png"
    for path, what in ((image, "image"), (mask, "mask")):
        if identity(path) is not None and identity(path) == identity(target):
            raise DataError(
                f"--out {target} is the input {what} itself; dcgd remove never writes over "
                "its inputs (not even with --overwrite): choose another --out"
            )
    if target.is_dir():
        raise DataError(f"--out {target} is a folder; give a file name such as result.png")
    if os.path.lexists(target) and not args.overwrite:
        raise DataError(
            f"--out {target} already exists; pass --overwrite to replace it, or choose "
            "another --out"
        )
    # Read both now: a bad image, mask or output format fails before the model loads.
    kept, hole = load_kept(image), load_mask(mask)
    check_mask(hole, kept.pixels.shape, str(mask), str(image))
    if not writable(kept.mode, target.suffix):
        raise DataError(
            f"--out {target}: a {target.suffix} file cannot hold {image} ({kept.mode}) "
            "unchanged; write it as .png or .tif"
        )
    prepare_folder(target.parent)
    return Plan(
        [Job(image.stem, image, mask, target)], [], None, target, {image.stem: (kept, hole)}
    )


def plan_folder(args: argparse.Namespace) -> Plan:
    image, mask, out = args.image, args.mask, args.out
    if out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir():
        raise DataError(f"--out {out} names a file, but --image is a folder: give a folder")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, but --image is a folder: give a folder")
    for folder, what in ((image, "--image"), (mask, "--mask")):
        if within(out, folder):
            raise DataError(
                f"--out {out} is inside the {what} folder {folder}: results could replace "
                "inputs, and the next run would read them as images; choose a folder outside it"
            )
    images, twice = index_images(image)
    masks, masks_twice = index_images(mask)
    if not images and not twice:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {image}")
    every_input = [*images.values(), *masks.values()]
    every_input += [p for paths in (*twice.values(), *masks_twice.values()) for p in paths]
    inputs = {identity(p) for p in every_input} - {None}
    if images and not any(k in masks or k in masks_twice for k in images):
        raise DataError(
            f"none of the {len(images)} image(s) in {image} has a mask of the same name in "
            f"{mask}; masks pair with images by their path without the extension"
        )

    jobs, skipped, existing = [], [], []
    for key in sorted({*images, *twice}):
        target = out / f"{key}.png"
        why = None
        if odd_name(key):
            why = "control or invisible characters in the file name; rename the file"
        elif key in twice:
            why = f"two images of this name ({', '.join(map(str, twice[key]))}); keep one"
        elif key in masks_twice:
            why = f"two masks of this name ({', '.join(map(str, masks_twice[key]))}); keep one"
        elif key not in masks:
            why = f"no mask of the same name in {mask}"
        elif not within(target.parent, out):
            why = f"{target} would be written outside --out (a symlink leads out of it)"
        elif identity(target) in inputs:
            why = f"{target} is an input image or mask (through a link); it is never replaced"
        elif target.is_dir():
            why = f"{target} is a folder"
        if why:
            skipped.append(f"{shown(key)}: {escaped(why)}")
            continue
        if os.path.lexists(target) and not args.overwrite:
            existing.append(target)
        jobs.append(Job(key, images[key], masks[key], target))
    if existing:
        raise DataError(
            f"{len(existing)} result(s) already exist in {out}, e.g. {existing[0]}; pass "
            "--overwrite to replace them, or choose another --out"
        )
    if jobs:
        prepare_folder(out)
    return Plan(jobs, skipped, out, out, {})


def plan(args: argparse.Namespace) -> Plan:
    """The jobs of a run, with every refusal about files made now (see ``RULES``)."""
    image, mask = args.image, args.mask
    for path, what in ((image, "image"), (mask, "mask")):
        if not path.exists():
            raise DataError(f"{what} {path} does not exist")
    if image.is_file() != mask.is_file():
        raise DataError(
            f"give --image and --mask as two files or as two folders ({image} is "
            f"{'a file' if image.is_file() else 'a folder'}, {mask} is "
            f"{'a file' if mask.is_file() else 'a folder'})"
        )
    return plan_single(args) if image.is_file() else plan_folder(args)


# ---------------------------------------------------------------------------- running
def build_describer(args: argparse.Namespace) -> Describer | None:
    """The CLIP describer of ``--describer``, or None without it."""
    if not args.describer:
        return None
    from dcgd.describe.clip_describer import load_region_describer

    return load_region_describer(args.describer, args.describer_pretrained)


def write_result(job: Job, image: KeptImage, root: Path | None, overwrite: bool) -> str | None:
    """Write ``image`` to ``job.out`` atomically; the reason when it must not be written."""
    job.out.parent.mkdir(parents=True, exist_ok=True)
    # Checked again now: the folder may have changed while the model ran.
    if root is not None and not within(job.out.parent, root):
        return f"{job.out} would be written outside --out (a symlink leads out of it)"
    if os.path.lexists(job.out) and not overwrite:
        return f"{job.out} appeared during the run; pass --overwrite to replace it"
    save_kept(image, job.out)
    return None


def build_remover(args: argparse.Namespace, pipeline: DCGDPipeline) -> Remover:
    """The :class:`Remover` of the command line's options (it checks them against the model)."""
    from dcgd.sampling.remover import Remover

    sampling = {
        "prompt_mode": args.prompt_mode,
        "w": args.w,
        "steps": args.steps,
        "seed": args.seed,
        "sampler": args.sampler,
    }
    return Remover(
        pipeline,
        dilate=args.dilate,
        context=args.context,
        resolution=args.resolution,
        t_info=args.t_info,
        t_mask=args.t_mask,
        describer=build_describer(args),
        sampling={k: v for k, v in sampling.items() if v is not None},
    )


def fill(
    todo: Plan,
    remover: Remover,
    overwrite: bool,
    skipped: list[str],
    prompts: dict[str, dict[str, str]] | None = None,
) -> int:
    """Fill and write every job, with its ``prompts`` entry if any; a job that fails is added
    to ``skipped`` (folder mode) or raises (one image). Returns how many results were written."""
    prompts = prompts or {}
    single, done = todo.root is None, 0
    for job in tqdm(todo.jobs, desc="remove", unit="image"):
        try:
            if job.key in todo.loaded:
                kept, hole = todo.loaded.pop(job.key)
            else:
                kept, hole = load_kept(job.image), load_mask(job.mask)
                check_mask(hole, kept.pixels.shape, str(job.mask), str(job.image))
            result = remover(kept.rgb, hole, key=job.key, **prompts.get(job.key, {}))
        except DCGDError as err:
            if single:
                raise
            skipped.append(f"{shown(job.key)}: {escaped(err)}")
            continue
        try:
            why = write_result(job, kept.filled(result.image, result.mask), todo.root, overwrite)
        except (OSError, DataError) as err:  # disk full, permissions: every later one too
            reason = err.strerror if isinstance(err, OSError) and err.strerror else escaped(err)
            raise DataError(
                f"cannot write {job.out} ({reason}); {done} result(s) were written before it. "
                "Check free space and permissions of --out"
            ) from None
        if why:
            if single:
                raise DataError(why)
            skipped.append(f"{shown(job.key)}: {escaped(why)}")
            continue
        done += 1
    return done


def require_checkpoint(path: Path) -> None:
    """Refuse a missing --checkpoint before anything loads (``remove`` and ``app``)."""
    if not path.exists():
        raise ModelLoadError(
            f"checkpoint {path} does not exist; give a .ckpt written by 'python -m "
            "dcgd fit' (e.g. runs/<name>/checkpoints/last.ckpt) or a folder from 'dcgd export'"
        )


def run(args: argparse.Namespace) -> int:
    from dcgd.devices import resolve_device
    from dcgd.method.guidance import needed_descriptions
    from dcgd.sampling.pipeline import load_pipeline

    require_checkpoint(args.checkpoint)
    device = resolve_device(args.device)
    todo = plan(args)  # every refusal about files happens here, before the model loads
    prompts = read_prompt_file(args.prompts) if args.prompts else {}
    unused = sorted(set(prompts) - {job.key for job in todo.jobs})
    if prompts and unused:
        print(
            f"note: {len(unused)} name(s) in {args.prompts} match no image to fill, e.g. "
            f"{shown(unused[0])}; names are paths in the --image folder",
            file=sys.stderr,
        )
    if any(job.out.suffix.lower() in LOSSY_EXTENSIONS for job in todo.jobs):
        print("note: a lossy format changes pixels outside the mask too; use PNG to keep them")
    skipped = list(todo.skipped)
    done = 0
    if todo.jobs:
        pipeline = load_pipeline(args.checkpoint, use_ema=not args.no_ema).to(device)
        if args.compile:
            print("compiling the U-Net and VAE (at the first image; tens of seconds on a CPU)")
            pipeline.compile()
        remover = build_remover(args, pipeline)
        described = all(
            set(prompts.get(job.key, {})) >= set(needed_descriptions(remover.prompt_mode))
            for job in todo.jobs
        )
        missing = [] if described else remover.missing_descriptions()
        if missing:
            print(
                f"warning: prompt mode {remover.prompt_mode!r} uses {' and '.join(missing)} "
                "but none was given: using empty prompts. Give --t-info / --t-mask, or "
                "--describer <open_clip model> to describe each image with CLIP.",
                file=sys.stderr,
            )
        done = fill(todo, remover, args.overwrite, skipped, prompts)
    for line in skipped:
        print(f"  skipped {line}", file=sys.stderr)
    print(f"dcgd remove: {done} done, {len(skipped)} skipped; results in {todo.where}")
    return 1 if skipped else 0
