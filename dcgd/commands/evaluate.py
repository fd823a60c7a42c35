"""``python -m dcgd evaluate``: score any method's outputs on the Table-1 protocol.

Files are matched by name: the path relative to each folder without its extension
(``a/b.png`` in --pred matches ``a/b.jpg`` in --target). Nothing is guessed: missing files,
unreadable files, mismatched sizes and masks outside every bucket are listed and counted,
and only the complete, consistent images are scored. Mask pixels above 127 are masked.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from dcgd.data import images
from dcgd.data.buckets import OUTSIDE, bucket_index
from dcgd.errors import DataError
from dcgd.eval.evaluator import Evaluator
from dcgd.eval.metrics import LEFT_OUT, composite, load_fid
from dcgd.eval.removal import ObjectResidue
from dcgd.eval.table import protocol_text, rows_to_csv, to_markdown

HELP = "score a method's output images per mask-ratio bucket (PSNR, SSIM, MAE, LPIPS)"

SHOW = 10  # problems listed per kind on the console (the JSON lists all)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="folder of the method's outputs")
    parser.add_argument("--target", required=True, type=Path, help="folder of ground-truth images")
    parser.add_argument("--mask", required=True, type=Path, help="folder of masks (white = filled)")
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
    parser.add_argument(
        "--device", default="cpu", help="torch device for LPIPS / FID (default cpu)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="images of the same size scored together (default 16)",
    )


def index_images(folder: Path, problems: dict) -> dict[str, Path]:
    """``{relative path without suffix: file}``; names with two files are reported, not picked."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in images.IMAGE_EXTENSIONS:
            found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    for key, paths in found.items():
        if len(paths) > 1:
            problems["ambiguous"].setdefault(key, []).extend(str(p) for p in paths)
    return {k: v[0] for k, v in found.items() if len(v) == 1}


def load_rgb(path: Path) -> torch.Tensor:
    """``[1,3,H,W]`` in [-1,1] (the data loaders' decoding: alpha flattened, 16-bit scaled)."""
    return images.to_tensor(images.load_rgb(path))[None]


def load_mask(path: Path) -> torch.Tensor:
    """``[1,1,H,W]`` in {0,1}: pixels brighter than half range are masked."""
    return images.mask_to_tensor(images.load_mask(path))[None]


def _size(x: torch.Tensor) -> str:
    return f"{x.shape[-1]}x{x.shape[-2]}"


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}")
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
    preds = index_images(args.pred, problems)
    targets = index_images(args.target, problems)
    masks = index_images(args.mask, problems)
    sources = index_images(args.source, problems) if args.source else None
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
        args.device
    )
    fid = load_fid() if args.fid else None
    if fid is not None:
        fid = fid.to(args.device)
    if sources is None:
        print("note: no --source given; the composite keeps the TARGET outside the mask")

    scored = 0
    pending: list[tuple] = []  # images of one size, scored as one batch

    def flush() -> None:
        if not pending:
            return
        keys_, preds_, targets_, masks_, sources_, buckets_, ratios_ = zip(*pending, strict=True)
        dev = args.device
        pred, target, mask = (torch.cat(x).to(dev) for x in (preds_, targets_, masks_))
        src = None if sources is None else torch.cat(sources_).to(dev)
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
        scored += 1
    flush()

    _report_problems(problems)
    if scored == 0:
        raise DataError(
            f"no image could be scored ({len(preds)} predictions, {len(targets)} targets, "
            f"{len(masks)} masks); see the problems above"
        )
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
    print(f"scored {scored} of {len(set(preds) | set(targets))} images")

    if args.json:
        payload = {metric: _clean(per) for metric, per in means.items()}
        payload["counts"] = counts
        payload["method"] = name
        payload["protocol"] = protocol
        payload["problems"] = problems
        payload["problem_counts"] = {k: len(v) for k, v in problems.items()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        args.csv.write_text(rows_to_csv(evaluator.gather_rows()))
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(table + "\n" + protocol_text(protocol))
    return 0


def _clean(per_bucket: dict[str, float]) -> dict[str, float | None | str]:
    """JSON has no NaN / inf: an empty bucket is null, a perfect PSNR is the string 'inf'."""
    out: dict[str, float | None | str] = {}
    for k, v in per_bucket.items():
        out[k] = None if math.isnan(v) else ("inf" if math.isinf(v) else v)
    return out


def _report_problems(problems: dict[str, dict]) -> None:
    for kind, items in problems.items():
        if not items:
            continue
        print(f"{kind.replace('_', ' ')}: {len(items)}")
        for key, detail in list(items.items())[:SHOW]:
            print(f"  {key}: {detail}")
        if len(items) > SHOW:
            print(f"  ... and {len(items) - SHOW} more (all listed in --json)")
