"""``python -m dcgd evaluate``: score any method's outputs on the Table-1 protocol.

Files are matched by name: the path relative to each folder without its extension
(``a/b.png`` in --pred matches ``a/b.jpg`` in --target). Nothing is guessed: missing files,
unreadable files, mismatched sizes and masks outside every bucket are listed and counted,
and only the complete, consistent images are scored. Mask pixels above 127 are masked.

A partial evaluation is an error (exit 2, nothing written) unless ``--allow-missing``: a table
over 10 of 500 images must not pass for the table over 500. Result files are never replaced
without ``--overwrite``, and each is written whole (temporary file + rename).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from dcgd.cli.options import add_device_argument
from dcgd.data import images
from dcgd.data.buckets import OUTSIDE, bucket_index
from dcgd.devices import resolve_device
from dcgd.errors import ConfigError, DataError
from dcgd.eval.evaluator import Evaluator
from dcgd.eval.metrics import LEFT_OUT, load_fid
from dcgd.eval.removal import ObjectResidue
from dcgd.eval.table import protocol_text, rows_to_csv, to_markdown
from dcgd.files import check_new_file, write_atomic
from dcgd.method.input import composite
from dcgd.validation import whole

HELP = "score a method's output images per mask-ratio bucket (PSNR, SSIM, MAE, LPIPS)"

SHOW = 10  # problems listed per kind on the console (the JSON lists all)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="folder of the method's outputs")
    parser.add_argument("--target", type=Path, help="folder of ground-truth images")
    parser.add_argument("--mask", type=Path, help="folder of masks (white = filled)")
    parser.add_argument(
        "--pairs",
        type=Path,
        help="a removal-pairs folder (source/ mask/ target/, e.g. RORD): the same as --source "
        "DIR/source --mask DIR/mask --target DIR/target (DIR/test/ when it holds them)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="folder of the inputs the method saw; without it the composite keeps the target "
        "outside the mask",
    )
    parser.add_argument(
        "--json", type=Path, help="write per-bucket means, counts and problems here"
    )
    parser.add_argument("--csv", type=Path, help="write every image's scores here")
    parser.add_argument("--table", type=Path, help="write the markdown table here")
    parser.add_argument(
        "--name", help="column name of the method (default: the --pred folder name)"
    )
    parser.add_argument(
        "--lpips",
        default="alex,vgg",
        help="LPIPS backbones, comma-separated, or 'none' (default alex,vgg)",
    )
    parser.add_argument(
        "--lpips-weights",
        type=Path,
        help="folder holding torchvision's alexnet-owt-7be5be79.pth / vgg16-397923af.pth "
        "(default: $TORCH_HOME/hub/checkpoints)",
    )
    parser.add_argument(
        "--fid", action="store_true", help="also FID over all images (needs torch-fidelity)"
    )
    parser.add_argument(
        "--removal",
        choices=["none", "residue"],
        default="none",
        help="also the weight-free object-residue score (needs --source showing the objects "
        "that were removed; lower is better)",
    )
    add_device_argument(parser, default="cpu", use=" for LPIPS / FID")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="images of the same size scored together (default 16)",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score the complete images even when others were skipped (missing, unreadable, "
        "mismatched, ambiguous or outside every bucket); without it that is an error",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing --json / --csv / --table files"
    )


def index_folder(folder: Path, problems: dict) -> dict[str, Path]:
    """``{relative path without suffix: file}``; names with two files are reported, not picked."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    unique, twice = images.index_images(folder)
    for key, paths in twice.items():
        problems["ambiguous"].setdefault(key, []).extend(str(p) for p in paths)
    return unique


def load_rgb(path: Path) -> torch.Tensor:
    """``[1,3,H,W]`` in [-1,1] (the data loaders' decoding: alpha flattened, 16-bit scaled)."""
    return images.to_tensor(images.load_rgb(path))[None]


def load_mask(path: Path) -> torch.Tensor:
    """``[1,1,H,W]`` in {0,1}: pixels brighter than half range are masked."""
    return images.mask_to_tensor(images.load_mask(path))[None]


def _size(x: torch.Tensor) -> str:
    return f"{x.shape[-1]}x{x.shape[-2]}"


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: the result files are new (or --overwrite), folders are not files, and
    no two options name the same file (the last writer would silently win)."""
    seen: dict[Path, str] = {}
    for flag in ("json", "csv", "table"):
        path = getattr(args, flag)
        if path is None:
            continue
        check_new_file(path, f"--{flag}", args.overwrite)
        key = path.resolve()
        if key in seen:
            raise ConfigError(f"--{seen[key]} and --{flag} name the same file {path}; give two")
        seen[key] = flag


def resolve_pairs(args: argparse.Namespace) -> None:
    """``--pairs DIR`` sets --source / --mask / --target to its sub-folders; without it,
    --target and --mask are required."""
    if args.pairs is not None:
        given = [f"--{f}" for f in ("source", "mask", "target") if getattr(args, f) is not None]
        if given:
            raise ConfigError(
                f"--pairs sets --source, --mask and --target itself; drop {', '.join(given)}"
            )
        from dcgd.data.paired import pairs_folder

        folder = pairs_folder(args.pairs, "test")
        args.source, args.mask, args.target = (folder / p for p in ("source", "mask", "target"))
    missing = [f"--{f}" for f in ("target", "mask") if getattr(args, f) is None]
    if missing:
        raise ConfigError(
            f"give {' and '.join(missing)} (folders of images), or --pairs DIR for a folder "
            "holding source/ mask/ target/"
        )


def run(args: argparse.Namespace) -> int:
    resolve_pairs(args)
    whole("--batch-size", args.batch_size, 1)
    check_outputs(args)
    device = resolve_device(args.device)
    problems: dict[str, dict] = {
        k: {}
        for k in (
            "missing_pred",
            "missing_target",
            "missing_mask",
            "missing_source",
            "ambiguous",
            "unreadable",
            "size_mismatch",
            "outside_buckets",
        )
    }
    preds = index_folder(args.pred, problems)
    targets = index_folder(args.target, problems)
    masks = index_folder(args.mask, problems)
    sources = index_folder(args.source, problems) if args.source else None
    ambiguous = set(problems["ambiguous"])  # reported once, as ambiguous, not also as missing
    for key in sorted(set(targets) - set(preds) - ambiguous):
        problems["missing_pred"][key] = str(targets[key])
    for key in sorted(set(preds) - set(targets) - ambiguous):
        problems["missing_target"][key] = str(preds[key])
    keys = []
    for key in sorted(set(preds) & set(targets)):
        if key in ambiguous:
            continue
        if key not in masks:
            problems["missing_mask"][key] = str(preds[key])
        elif sources is not None and key not in sources:
            problems["missing_source"][key] = str(preds[key])
        else:
            keys.append(key)

    given = _given(args, preds, targets, problems)
    if keys:
        # Files that are missing or named twice are known now: say so before the long part.
        _check_complete(args, given, given - set(keys), problems)

    nets = (
        []
        if args.lpips.strip().lower() == "none"
        else [n.strip() for n in args.lpips.split(",") if n.strip()]
    )
    if args.removal != "none" and sources is None:
        raise DataError(
            f"--removal {args.removal} compares the result with the object it replaced: give "
            "--source, the folder of the images the method saw"
        )
    removal = [ObjectResidue()] if args.removal == "residue" else []
    evaluator = Evaluator(lpips=nets, lpips_weights_dir=args.lpips_weights, removal=removal).to(
        device
    )
    fid = load_fid() if args.fid else None
    if fid is not None:
        fid = fid.to(device)
    if sources is None:
        print("note: no --source given; the composite keeps the TARGET outside the mask")

    scored_keys: list[str] = []
    pending: list[tuple] = []  # images of one size, scored as one batch

    def flush() -> None:
        if not pending:
            return
        keys_, preds_, targets_, masks_, sources_, buckets_, ratios_ = zip(*pending, strict=True)
        pred, target, mask = (torch.cat(x).to(device) for x in (preds_, targets_, masks_))
        src = None if sources is None else torch.cat(sources_).to(device)
        bucket = torch.tensor(buckets_)
        evaluator.update(pred, target, mask, src, bucket, list(keys_), list(ratios_))
        if fid is not None:
            result = composite(pred, target if src is None else src, mask)
            fid.update(((target + 1) * 127.5).round().to(torch.uint8), real=True)
            fid.update(((result + 1) * 127.5).round().to(torch.uint8), real=False)
        pending.clear()

    for key in tqdm(keys, desc="evaluate", unit="img", file=sys.stderr):
        try:
            pred, target, mask = load_rgb(preds[key]), load_rgb(targets[key]), load_mask(masks[key])
            source = load_rgb(sources[key]) if sources is not None else None
        except DataError as err:
            problems["unreadable"][key] = str(err)
            continue
        sizes = {"pred": _size(pred), "target": _size(target), "mask": _size(mask)}
        if source is not None:
            sizes["source"] = _size(source)
        if len(set(sizes.values())) > 1:
            problems["size_mismatch"][key] = ", ".join(f"{k} {v}" for k, v in sizes.items())
            continue
        masked, total = int(mask.sum()), mask.numel()
        bucket = bucket_index(masked, total)
        if bucket == OUTSIDE:
            problems["outside_buckets"][key] = masked / total
            continue
        if pending and (len(pending) >= args.batch_size or pending[0][1].shape != pred.shape):
            flush()
        pending.append((key, pred, target, mask, source, bucket, masked / total))
        scored_keys.append(key)
    flush()

    scored = len(scored_keys)
    if scored == 0:
        _report_problems(problems, listed_in_json=False)
        raise DataError(
            f"no image could be scored ({len(preds)} predictions, {len(targets)} targets, "
            f"{len(masks)} masks); see the problems above"
        )
    _check_complete(args, given, given - set(scored_keys), problems)
    _report_problems(problems, listed_in_json=bool(args.json))
    means = evaluator.compute()
    if fid is not None:
        means["fid"] = {"all": float(fid.compute())} if scored >= 2 else {"all": math.nan}
    elif args.fid:
        print(f"note: fid left out: {LEFT_OUT.get('fid', 'unavailable')}")
    counts = evaluator.counts()
    counts["outside"] = len(problems["outside_buckets"])
    name = args.name or args.pred.resolve().name
    table = to_markdown({name: means}, counts=counts)
    protocol = evaluator.protocol()
    if sources is None:
        protocol["composite"] += " (no --source: target used as source)"
    print()
    print(table)
    print(protocol_text(protocol))
    print(f"scored {scored} of {len(given)} images")

    if args.json:
        payload = {metric: _clean(per) for metric, per in means.items()}
        payload["counts"] = counts
        payload["method"] = name
        payload["protocol"] = protocol
        payload["problems"] = problems
        payload["problem_counts"] = {k: len(v) for k, v in problems.items()}
        write_atomic(args.json, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    if args.csv:
        write_atomic(args.csv, rows_to_csv(evaluator.gather_rows()))
    if args.table:
        write_atomic(args.table, table + "\n" + protocol_text(protocol))
    return 0


def _check_complete(
    args: argparse.Namespace, given: set[str], skipped: set[str], problems: dict[str, dict]
) -> None:
    """A partial evaluation is an error unless --allow-missing: list what was skipped, and
    write nothing (a table over part of the images must not pass for the whole one)."""
    if not skipped or args.allow_missing:
        return
    _report_problems(problems, listed_in_json=False)
    kinds = ", ".join(
        f"{kind.replace('_', ' ')} {len(items)}" for kind, items in problems.items() if items
    )
    raise DataError(
        f"{len(skipped)} of {len(given)} images were skipped ({kinds}; listed above); fix "
        "them, or pass --allow-missing to score only the complete ones"
    )


def _given(
    args: argparse.Namespace, preds: dict, targets: dict, problems: dict[str, dict]
) -> set[str]:
    """The images the user gave: a prediction or a target (named twice counts too: it is
    an image that was not scored)."""
    folders = (args.pred.resolve(), args.target.resolve())
    ambiguous = {
        key
        for key, paths in problems["ambiguous"].items()
        if any(Path(p).resolve().is_relative_to(f) for p in paths for f in folders)
    }
    return set(preds) | set(targets) | ambiguous


def _clean(per_bucket: dict[str, float]) -> dict[str, float | None | str]:
    """JSON has no NaN / inf: an empty bucket is null, a perfect PSNR is the string 'inf'."""
    out: dict[str, float | None | str] = {}
    for k, v in per_bucket.items():
        out[k] = None if math.isnan(v) else ("inf" if math.isinf(v) else v)
    return out


def _report_problems(problems: dict[str, dict], listed_in_json: bool) -> None:
    for kind, items in problems.items():
        if not items:
            continue
        print(f"{kind.replace('_', ' ')}: {len(items)}")
        for key, detail in list(items.items())[:SHOW]:
            print(f"  {key}: {detail}")
        if len(items) > SHOW:
            where = " (all listed in --json)" if listed_in_json else ""
            print(f"  ... and {len(items) - SHOW} more{where}")
