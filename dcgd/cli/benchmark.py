"""``python -m dcgd benchmark removal``: does the removed object come back? (the paper's Fig. 7)

Runs a trained model on the built-in repeated-object cases (``dcgd.eval.repeated_objects``:
a scene with look-alikes of the object to remove) under every prompt mode and a grid of
guidance weights ``w``, next to OpenCV Telea, Navier-Stokes and a mean-colour fill on the same
cases, and reports per method the reappearance rate (judged by colour, independently of the
model and of CLIP), hole MAE / PSNR, SSIM and LPIPS (only with real weights), each with a
bootstrap 95% interval, plus the paired differences ``<mode> - none`` per ``w``.

Writes to --out: ``table.md``, ``table.csv``, ``results.json`` (settings, means, intervals,
differences, every case's scores), ``grid.png`` and ``reappearance.png``; and logs them to an
MLflow run (experiment ``dcgd-benchmark``) unless --no-mlflow.

With --pairs DIR the cases are real removal pairs instead (``DIR/source/``, ``mask/``,
``target/`` matched by name, or ``DIR/test/...``; read as ``dataset: pairs`` reads them for
``test``: one centre crop at the model's resolution or --size, sorted by name, the first
--count). Reappearance is NOT measured there (real pairs have no colour judge): the measures
are hole MAE / PSNR, SSIM and LPIPS, and ``hole_mae.png`` replaces ``reappearance.png``.
``t_info`` / ``t_mask`` are empty unless --prompts FILE (CSV ``name,t_info,t_mask`` or JSON
lines; ``name`` is the pair's path under ``source/`` with or without its extension).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from dcgd.cli.options import add_device_argument
from dcgd.errors import ConfigError, TrackingError
from dcgd.files import check_out_folder, save_atomic, write_atomic
from dcgd.method.guidance import PROMPT_MODES
from dcgd.validation import finite, whole

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

HELP = "benchmarks of a trained model; 'removal': repeated-object reappearance (Fig. 7)"
TIME_TO_QUALITY_HELP = (
    "hole error and reappearance against seconds per image, per sampler and steps"
)
REMOVAL_HELP = "how often the removed object comes back among look-alikes, per prompt mode and w"

BASELINES = ("telea", "navier_stokes", "mean_fill")
GRID_ROWS = 8
EXPERIMENT = "dcgd-benchmark"
OUTPUTS = ("table.md", "table.csv", "results.json", "grid.png", "reappearance.png")
PAIRS_OUTPUTS = ("table.md", "table.csv", "results.json", "grid.png", "hole_mae.png")
NOT_MEASURED = "reappearance not measured: real pairs have no judge of the removed object"
MAX_SIZE = 4096  # case side in pixels: every case is sampled at this size, per method and w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    removal = benchmarks.add_parser(
        "removal", help=REMOVAL_HELP, description=__doc__.split("\n\n", 1)[1]
    )
    removal.formatter_class = argparse.RawDescriptionHelpFormatter
    add_removal_arguments(removal)
    from dcgd.benchmarks import time_to_quality

    speed = benchmarks.add_parser(
        "time-to-quality",
        help=TIME_TO_QUALITY_HELP,
        description=time_to_quality.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_time_to_quality_arguments(speed)


def add_time_to_quality_arguments(parser: argparse.ArgumentParser) -> None:
    from dcgd.benchmarks.time_to_quality import DEFAULT_SAMPLERS, DEFAULT_STEPS
    from dcgd.components.schedulers import SAMPLERS

    parser.add_argument("--checkpoint", required=True, type=Path, help="a .ckpt or an export")
    parser.add_argument("--out", required=True, type=Path, help="folder for table, JSON, plot")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    parser.add_argument(
        "--samplers",
        nargs="+",
        choices=sorted(SAMPLERS),
        default=list(DEFAULT_SAMPLERS),
        help=f"samplers to measure (default {' '.join(DEFAULT_SAMPLERS)})",
    )
    parser.add_argument(
        "--steps",
        nargs="+",
        type=int,
        default=list(DEFAULT_STEPS),
        help=f"step counts to measure (default {' '.join(map(str, DEFAULT_STEPS))}; 50-step "
        "DDIM, the reference, is always measured)",
    )
    parser.add_argument("--count", type=int, default=32, help="cases (default 32)")
    parser.add_argument("--batch-size", type=int, default=8, help="cases per batch (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed")
    parser.add_argument("--case-seed", type=int, default=0, help="seed of the built-in cases")
    parser.add_argument("--size", type=int, help="case side (default: the model's resolution)")
    parser.add_argument("--dilation", type=int, default=3, help="mask growth in px (default 3)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--no-ema", action="store_true", help="a .ckpt's raw weights")
    add_device_argument(parser)


def add_removal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a .ckpt written by 'python -m dcgd fit' or a folder written by 'dcgd export'",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="folder for the tables, JSON and figures"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into --out even if it is not empty"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=64,
        help="number of cases (default 64; sizes cycle); with --pairs: at most this many pairs, "
        "the first in name order",
    )
    parser.add_argument(
        "--pairs",
        type=Path,
        help="score on real removal pairs instead of the built-in cases: a folder with "
        "source/ mask/ target/ (or test/ holding them), read as 'dataset: pairs' is; hole "
        "MAE / PSNR, SSIM, LPIPS only (no reappearance: real pairs have no judge)",
    )
    parser.add_argument(
        "--prompts",
        type=Path,
        help="with --pairs: t_info / t_mask per pair from a CSV name,t_info,t_mask (or JSON "
        "lines), name = the path under source/; without it both prompts are empty",
    )
    parser.add_argument(
        "--w",
        type=float,
        nargs="+",
        default=[1.0, 1.5, 3.0],
        help="guidance weights of eq. 6 to sweep (default 1.0 1.5 3.0; mode 'none' ignores w "
        "and runs once)",
    )
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's, e.g. 25)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling seed (per case id) and bootstrap seed (default 0)",
    )
    parser.add_argument(
        "--case-seed",
        type=int,
        default=0,
        help="seed of the built-in cases (default 0: the standard set)",
    )
    parser.add_argument(
        "--size", type=int, help="case side in pixels (default: the model's training resolution)"
    )
    parser.add_argument(
        "--dilation", type=int, default=3, help="mask = object footprint grown by N px (default 3)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="cases sampled together (default 16)"
    )
    parser.add_argument(
        "--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)"
    )
    parser.add_argument(
        "--grid-w",
        type=float,
        help="w of the model columns in grid.png (default: the model's w when in --w, else "
        "the first --w)",
    )
    parser.add_argument(
        "--lpips",
        choices=["alex", "vgg", "none"],
        default="alex",
        help="LPIPS backbone; left out when its ImageNet weights are not on disk (default alex)",
    )
    parser.add_argument(
        "--lpips-weights",
        type=Path,
        help="folder with torchvision's alexnet/vgg16 checkpoints (default $TORCH_HOME/hub)",
    )
    parser.add_argument(
        "--no-ema", action="store_true", help="a .ckpt's raw weights instead of its EMA"
    )
    add_device_argument(parser)
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--experiment", default=EXPERIMENT, help=f"MLflow experiment (default {EXPERIMENT})"
    )
    parser.add_argument("--run-name", help="MLflow run name (default: removal-<checkpoint name>)")
    parser.add_argument(
        "--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )


# --------------------------------------------------------------------------------- checks


def check_options(args: argparse.Namespace) -> list[float]:
    """One-line errors for bad options (before the model loads); the sorted distinct ``w``."""
    for name in ("count", "batch_size", "resamples"):
        whole("--" + name.replace("_", "-"), getattr(args, name), 1)
    if args.steps is not None:
        whole("--steps", args.steps, 1)
    # Seeds key numpy generators, which refuse negatives: after all the sampling, not here.
    whole("--seed", args.seed, 0)
    whole("--case-seed", args.case_seed, 0)
    whole("--dilation", args.dilation, 0)
    if args.size is not None:
        check_size(args.size, 1)  # the model's multiple is checked once it is loaded
    for w in args.w:
        finite("--w", w)
    if args.grid_w is not None:
        finite("--grid-w", args.grid_w)
        if args.grid_w not in args.w:
            raise ConfigError(f"--grid-w {args.grid_w:g} is not one of --w {args.w}")
    if args.prompts is not None and args.pairs is None:
        raise ConfigError("--prompts describes real pairs: give --pairs DIR with it")
    check_out_folder(args.out, "--out", args.overwrite, "benchmark results")
    return sorted(set(args.w))


def check_size(size: int, multiple: int) -> None:
    if size < 24:
        raise ConfigError(f"--size must be at least 24 px (objects and SSIM need it), got {size}")
    whole("--size", size, 24, MAX_SIZE)
    if size % multiple:
        raise ConfigError(
            f"--size {size} is not a multiple of {multiple}, which this model's image sides must be"
        )


def load_model(args: argparse.Namespace) -> tuple[Any, torch.device, int]:
    """The pipeline of --checkpoint on --device, and the case side (--size or the model's)."""
    from dcgd.devices import resolve_device
    from dcgd.sampling.pipeline import load_pipeline

    device = resolve_device(args.device)
    pipe = load_pipeline(args.checkpoint, use_ema=not args.no_ema).to(device)
    size = args.size or pipe.settings.resolution
    check_size(size, pipe.size_multiple)
    return pipe, device, size


def method_key(mode: str, w: float | None) -> str:
    return mode if w is None else f"{mode}_w{w:g}"


# ------------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:
    if args.benchmark == "time-to-quality":
        return run_time_to_quality(args)
    if args.benchmark != "removal":
        raise ConfigError(f"unknown benchmark {args.benchmark!r}")
    return run_removal(args)


def run_time_to_quality(args: argparse.Namespace) -> int:
    from dcgd.benchmarks import time_to_quality as ttq
    from dcgd.benchmarks.data import machine
    from dcgd.eval import repeated_objects as bench

    for name in ("count", "batch_size", "resamples"):
        whole("--" + name.replace("_", "-"), getattr(args, name), 1)
    for steps in args.steps:
        whole("--steps", steps, 1, 1000)
    whole("--seed", args.seed, 0)
    whole("--case-seed", args.case_seed, 0)
    whole("--dilation", args.dilation, 0)
    if args.size is not None:
        check_size(args.size, 1)
    check_out_folder(args.out, "--out", args.overwrite, "benchmark results")
    pipe, device, size = load_model(args)
    whole("--dilation", args.dilation, 0, size // 2 - 1)

    points = list(
        dict.fromkeys([ttq.REFERENCE, *((s, n) for s in args.samplers for n in args.steps)])
    )
    cases = bench.build_cases(args.count, args.case_seed, size, args.dilation)
    batches = [cases[i : i + args.batch_size] for i in range(0, len(cases), args.batch_size)]
    tensors = [bench.case_batch(chunk) for chunk in batches]  # on the CPU, as score reads them
    indices = bench.resample_indices(len(cases), args.resamples, args.seed)
    progress = tqdm(
        total=len(cases) * len(points), desc="time to quality", unit="img", file=sys.stderr
    )
    measured = ttq.measure(pipe, cases, batches, tensors, points, indices, args.seed, progress)
    progress.close()
    chosen = ttq.suggest(measured)
    settings = {
        "benchmark": "time-to-quality",
        "checkpoint": str(args.checkpoint),
        "device": str(device),
        "machine": machine(),
        "torch": torch.__version__,
        "size": size,
        "count": len(cases),
        "case_seed": args.case_seed,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "prompt_mode": pipe.settings.prompt_mode,
        "w": pipe.settings.w,
        "reference": list(ttq.REFERENCE),
    }
    table = ttq.to_markdown(settings, measured, chosen)
    rows = [p.row() for p in measured]
    payload = {
        "settings": settings,
        "points": rows,
        "suggested": None if chosen is None else {"sampler": chosen.sampler, "steps": chosen.steps},
    }
    out = args.out
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    figure = ttq.plot(measured, chosen)
    write_atomic(out / "table.md", table)
    write_atomic(out / "table.csv", buffer.getvalue())
    write_atomic(out / "results.json", json.dumps(payload, indent=2, allow_nan=False) + "\n")
    save_atomic(out / "time_to_quality.png", lambda tmp: figure.savefig(tmp, dpi=120))
    print()
    print(table)
    print(f"written to {out}")
    return 0


def run_removal(args: argparse.Namespace) -> int:
    from dcgd.eval import repeated_objects as bench

    ws = check_options(args)
    tracking_uri = None
    if not args.no_mlflow:
        from dcgd.tracking.store import check_reachable, resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(tracking_uri)
    pipe, device, size = load_model(args)
    # Half the side grows any object's mask over the whole image: nothing left to judge by.
    whole("--dilation", args.dilation, 0, size // 2 - 1)
    steps = args.steps or pipe.settings.steps
    grid_w = args.grid_w
    if grid_w is None:
        grid_w = pipe.settings.w if pipe.settings.w in ws else ws[0]
    lpips, lpips_note = _load_lpips(args.lpips, args.lpips_weights, device)

    start = time.perf_counter()
    skipped: list[str] = []
    if args.pairs is None:
        cases = bench.build_cases(args.count, args.case_seed, size, args.dilation)
    else:
        cases, folder, skipped, prompted = load_pair_cases(
            args.pairs, size, args.count, args.prompts
        )
    batches = [cases[i : i + args.batch_size] for i in range(0, len(cases), args.batch_size)]
    tensors = [bench.case_batch(chunk) for chunk in batches]

    # method key -> (mode or baseline name, w or None)
    methods: dict[str, tuple[str, float | None]] = {}
    for mode in PROMPT_MODES:
        for w in [None] if mode == "none" else ws:
            methods[method_key(mode, w)] = (mode, w)
    for name in BASELINES:
        methods[name] = (name, None)
    grid_columns = [method_key(m, None if m == "none" else grid_w) for m in PROMPT_MODES]
    grid_columns += list(BASELINES)

    rows: dict[str, list[dict[str, float]]] = {key: [] for key in methods}
    shown: dict[str, list[torch.Tensor]] = {key: [] for key in grid_columns}
    progress = tqdm(
        total=len(cases) * len(methods), desc="benchmark removal", unit="img", file=sys.stderr
    )
    for key, (name, w) in methods.items():
        for chunk, batch in zip(batches, tensors, strict=True):
            pred = _predict(name, w, batch, pipe, steps, args.seed)
            if args.pairs is None:
                scored = bench.score(chunk, batch, pred)
            else:
                scored = bench.hole_scores(batch, pred)[0]
            if lpips is not None:
                for row, value in zip(scored, _lpips(lpips, batch, pred, device), strict=True):
                    row["lpips"] = value
            rows[key] += scored
            if key in shown and sum(len(x) for x in shown[key]) < GRID_ROWS:
                shown[key].append(pred.float().cpu())
            progress.update(len(chunk))
    progress.close()
    seconds = time.perf_counter() - start

    measures = [*bench.MEASURES, *(["lpips"] if lpips is not None else [])]
    if args.pairs is not None:
        measures.remove("reappeared")
    indices = bench.resample_indices(len(cases), args.resamples, args.seed)
    summary = summarise(methods, rows, cases, measures, indices)
    differences = paired_differences(ws, rows, measures, indices)
    settings = {
        "benchmark": "removal",
        "checkpoint": str(args.checkpoint),
        "model_resolution": pipe.settings.resolution,
        "layout": pipe.settings.layout,
        "sampler": pipe.settings.sampler,
        "size": size,
        "count": len(cases),
        "case_seed": args.case_seed,
        "seed": args.seed,
        "steps": steps,
        "w": ws,
        "grid_w": grid_w,
        "dilation": args.dilation,
        "resamples": args.resamples,
        "lpips": lpips_note,
        "use_ema": not args.no_ema,
    }
    protocol = bench.PROTOCOL
    if args.pairs is not None:
        for name in ("case_seed", "dilation"):
            del settings[name]
        settings["benchmark"] = "removal-pairs"
        settings["pairs"] = str(folder)
        settings["skipped_pairs"] = skipped
        settings["prompts"] = None if args.prompts is None else str(args.prompts)
        settings["prompted_pairs"] = prompted
        settings["reappearance"] = NOT_MEASURED
        protocol = pairs_protocol()
    out = args.out
    table = to_markdown(settings, summary, differences, measures)
    payload = {
        "settings": settings,
        "protocol": protocol,
        "methods": summary,
        "differences": differences,
        "cases": case_rows(cases, rows),
    }
    first = batches[0][:GRID_ROWS]
    columns = {key: torch.cat(shown[key])[: len(first)] for key in grid_columns}
    grid = grid_image(first, columns, grid_w)
    if args.pairs is None:
        figure, figure_name = reappearance_plot(ws, summary), "reappearance.png"
    else:
        figure, figure_name = hole_mae_plot(summary), "hole_mae.png"
    # Each file whole or not at all: a killed run (or --overwrite of an earlier one) never
    # leaves a truncated results.json next to the other files.
    write_atomic(out / "table.md", table)
    write_atomic(out / "table.csv", to_csv(summary, differences, measures))
    write_atomic(out / "results.json", json.dumps(payload, indent=2, allow_nan=False) + "\n")
    save_atomic(out / "grid.png", grid.save)
    save_atomic(out / figure_name, lambda tmp: figure.savefig(tmp, dpi=120))

    print()
    print(table)
    print(f"{len(cases)} cases x {len(methods)} methods in {seconds:.1f} s; written to {out}")
    if lpips is None:
        print(f"note: {lpips_note}")
    if skipped:
        print(f"note: {len(skipped)} pair(s) skipped (listed in results.json); first: {skipped[0]}")
    if tracking_uri is not None:
        run_id = log_to_mlflow(
            tracking_uri,
            args.experiment,
            args.run_name or f"removal-{'pairs-' if args.pairs else ''}{args.checkpoint.stem}",
            out,
            settings,
            summary,
            differences,
            seconds,
        )
        print(f"logged to MLflow run {run_id} (experiment {args.experiment}, {tracking_uri})")
    return 0


@dataclass(frozen=True, eq=False)
class PairCase:
    """A real removal pair at the working size, shaped like a built-in case for
    ``case_batch`` and ``grid_image``; images ``uint8 [H,W,3]``, mask ``uint8 {0,1}``."""

    id: str
    source: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    t_info: str
    t_mask: str


def load_pair_cases(
    root: Path, size: int, count: int, prompts_path: Path | None
) -> tuple[list[PairCase], Path, list[str], int]:
    """The first ``count`` usable pairs of ``root`` (``dataset: pairs``' reader and crop), the
    folder read, the pairs it skipped and how many pairs --prompts described."""
    from dcgd.data.buckets import PAPER_BUCKETS
    from dcgd.data.paired import PairedDataset
    from dcgd.data.prompt_file import read_prompt_file

    prompts = {} if prompts_path is None else read_prompt_file(prompts_path)
    dataset = PairedDataset(root, "test", size, PAPER_BUCKETS)
    cases = []
    for index in range(min(count, len(dataset))):
        source, mask, target = dataset.load(index)
        key = dataset.pairs[index].key
        given = prompts.get(key, {})
        cases.append(
            PairCase(key, source, target, mask, given.get("t_info", ""), given.get("t_mask", ""))
        )
    prompted = sum(c.id in prompts for c in cases)
    return cases, dataset.folder, list(dataset.bad), prompted


def pairs_protocol() -> dict[str, str]:
    from dcgd.eval.repeated_objects import PROTOCOL

    protocol = {
        "cases": "real removal pairs (source with the object, mask, target without it) read "
        "as 'dataset: pairs' reads them for test: one centre crop (short side resized to the "
        "working size) of all three, mask thresholded at 127, in name order",
        "reappeared": NOT_MEASURED,
    }
    keep = ("hole_mae", "hole_psnr", "ssim", "lpips", "composite", "intervals")
    return {**protocol, **{k: PROTOCOL[k] for k in keep}}


def _predict(
    name: str, w: float | None, batch: dict, pipe: Any, steps: int, seed: int
) -> torch.Tensor:
    from dcgd.benchmarks.time_to_quality import sample_batch
    from dcgd.eval import repeated_objects as bench
    from dcgd.eval.baselines import navier_stokes, telea

    if name == "telea":
        return telea().inpaint(batch["source"], batch["mask"])
    if name == "navier_stokes":
        return navier_stokes().inpaint(batch["source"], batch["mask"])
    if name == "mean_fill":
        return bench.mean_fill(batch["source"], batch["mask"])
    return sample_batch(
        pipe,
        batch,
        prompt_mode=name,
        w=1.0 if w is None else w,  # 'none': both branches are "", so w changes nothing
        steps=steps,
        seed=seed,
    ).cpu()


def _load_lpips(net: str, weights: Path | None, device: torch.device) -> tuple[Any, str]:
    if net == "none":
        return None, "LPIPS left out (--lpips none)"
    from dcgd.eval.metrics import LEFT_OUT, load_lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scorer = load_lpips(net, weights)
    if scorer is None:
        reason = LEFT_OUT.get(f"lpips_{net}", "weights unavailable")
        return None, f"LPIPS left out: {reason}"
    return scorer.to(device), f"lpips_{net} (torchvision ImageNet backbone)"


def _lpips(scorer: Any, batch: dict, pred: torch.Tensor, device: torch.device) -> list[float]:
    from dcgd.method.input import composite

    result = composite(pred.float().cpu(), batch["source"], batch["mask"])
    return scorer(result.to(device), batch["target"].to(device)).cpu().double().tolist()


# ----------------------------------------------------------------------------- statistics


def summarise(
    methods: dict[str, tuple[str, float | None]],
    rows: dict[str, list[dict[str, float]]],
    cases: list,
    measures: list[str],
    indices: np.ndarray,
) -> dict[str, dict]:
    """Per method: kind, mode, w, mean + interval of each measure, reappearance per size."""
    from dcgd.eval.repeated_objects import bootstrap

    summary = {}
    for key, (name, w) in methods.items():
        per_case = rows[key]
        summary[key] = {
            "kind": "baseline" if name in BASELINES else "model",
            "mode": name,
            "w": w,
            "n": len(per_case),
            **{m: bootstrap([r[m] for r in per_case], indices) for m in measures},
        }
        if "reappeared" not in measures:
            continue  # real pairs: no judge, so no rate (absent, not 0)
        by_size: dict[str, float] = {}
        for size_name in dict.fromkeys(c.size_name for c in cases):
            pairs = zip(per_case, cases, strict=True)
            picked = [r["reappeared"] for r, c in pairs if c.size_name == size_name]
            by_size[size_name] = float(np.mean(picked))
        summary[key]["reappeared_by_size"] = by_size
    return summary


def paired_differences(
    ws: list[float],
    rows: dict[str, list[dict[str, float]]],
    measures: list[str],
    indices: np.ndarray,
) -> dict[str, dict]:
    """``<mode>_w<w> - none`` per case, for every mode other than none and every ``w``."""
    from dcgd.eval.repeated_objects import bootstrap

    out = {}
    for mode in PROMPT_MODES[1:]:
        for w in ws:
            key = method_key(mode, w)
            diff = {
                m: bootstrap(
                    [a[m] - b[m] for a, b in zip(rows[key], rows["none"], strict=True)], indices
                )
                for m in measures
            }
            out[f"{key} - none"] = {"mode": mode, "w": w, **diff}
    return out


def case_rows(cases: list, rows: dict[str, list[dict[str, float]]]) -> list[dict]:
    out = []
    for i, case in enumerate(cases):
        if isinstance(case, PairCase):
            out.append(
                {
                    "id": case.id,
                    "t_info": case.t_info,
                    "t_mask": case.t_mask,
                    "mask_ratio": float(case.mask.mean()),
                    "results": {key: per_case[i] for key, per_case in rows.items()},
                }
            )
            continue
        out.append(
            {
                "id": case.id,
                "label": case.label,
                "scene": case.scene,
                "size": case.size_name,
                "t_info": case.t_info,
                "t_mask": case.t_mask,
                "mask_ratio": float(case.mask.mean()),
                "p_src": case.p_src,
                "p_clean": case.p_clean,
                "threshold": case.threshold,
                "results": {key: per_case[i] for key, per_case in rows.items()},
            }
        )
    return out


# -------------------------------------------------------------------------------- outputs

_NAMES = {
    "reappeared": "reappeared %",
    "hole_mae": "hole MAE",
    "hole_psnr": "hole PSNR",
    "ssim": "SSIM (whole)",
    "lpips": "LPIPS",
}


def _cell(stat: dict[str, float], measure: str, signed: bool = False) -> str:
    scale, digits = (100.0, 1) if measure == "reappeared" else (1.0, 2 if "psnr" in measure else 4)
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    mean, lo, hi = (fmt.format(stat[k] * scale) for k in ("mean", "lo", "hi"))
    return f"{mean} [{lo}, {hi}]"


def to_markdown(settings: dict, summary: dict, differences: dict, measures: list[str]) -> str:
    sizes = list(next(iter(summary.values())).get("reappeared_by_size", {}))
    head = ["method", "w", *(_NAMES[m] for m in measures), *(f"re. {s} %" for s in sizes)]
    if "pairs" in settings:
        lines = [
            f"# Removal on real pairs: {settings['checkpoint']}",
            "",
            f"{settings['count']} pairs from {settings['pairs']} at {settings['size']} px, "
            f"{settings['steps']} steps, seed {settings['seed']}; mean [bootstrap 95% interval]. "
            f"Prompts: {settings['prompted_pairs']} of {settings['count']} pairs described "
            f"{'by ' + settings['prompts'] if settings['prompts'] else '(no --prompts)'}, the "
            f"rest empty. Note: {NOT_MEASURED}.",
            "",
        ]
    else:
        lines = [
            f"# Repeated-object removal: {settings['checkpoint']}",
            "",
            f"{settings['count']} cases at {settings['size']} px (case seed "
            f"{settings['case_seed']}), {settings['steps']} steps, seed {settings['seed']}; mean "
            "[bootstrap 95% interval]. Reappeared: lower is better.",
            "",
        ]
    lines += [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for key, stat in summary.items():
        w = "any" if stat["mode"] == "none" else ("" if stat["w"] is None else f"{stat['w']:g}")
        cells = [key, w, *(_cell(stat[m], m) for m in measures)]
        cells += [f"{100 * stat['reappeared_by_size'][s]:.1f}" for s in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired differences on the same cases (negative reappearance / MAE = better than none):",
        "",
        "| comparison | w | " + " | ".join(f"Δ {_NAMES[m]}" for m in measures) + " |",
        "|" + "---|" * (len(measures) + 2),
    ]
    for key, diff in differences.items():
        cells = [key, f"{diff['w']:g}", *(_cell(diff[m], m, signed=True) for m in measures)]
        lines.append("| " + " | ".join(cells) + " |")
    from dcgd.eval.repeated_objects import PROTOCOL

    protocol = pairs_protocol() if "pairs" in settings else PROTOCOL
    lines += ["", "Protocol:", ""]
    lines += [f"- {k}: {v}" for k, v in protocol.items() if k != "lpips" or "lpips" in measures]
    if "lpips" not in measures:
        lines.append(f"- {settings['lpips']}")
    return "\n".join(lines) + "\n"


def to_csv(summary: dict, differences: dict, measures: list[str]) -> str:
    buffer = io.StringIO()
    head = ["kind", "name", "mode", "w"]
    head += [f"{m}_{s}" for m in measures for s in ("mean", "lo", "hi")]
    sizes = list(next(iter(summary.values())).get("reappeared_by_size", {}))
    head += [f"reappeared_{s}" for s in sizes]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    for key, stat in summary.items():
        row = [stat["kind"], key, stat["mode"], "" if stat["w"] is None else stat["w"]]
        row += [stat[m][s] for m in measures for s in ("mean", "lo", "hi")]
        writer.writerow(row + [stat["reappeared_by_size"][s] for s in sizes])
    for key, diff in differences.items():
        row = ["difference", key, diff["mode"], diff["w"]]
        row += [diff[m][s] for m in measures for s in ("mean", "lo", "hi")]
        writer.writerow(row + [""] * len(sizes))
    return buffer.getvalue()


def grid_image(cases: list, columns: dict[str, torch.Tensor], grid_w: float) -> Image.Image:
    """source | mask | one column per method | target, for ``cases``; names on top."""
    from PIL import ImageDraw

    from dcgd.eval.repeated_objects import case_batch
    from dcgd.tracking.images import image_grid

    batch = case_batch(cases)
    tiles = [batch["source"], batch["mask"], *columns.values(), batch["target"]]
    names = ["source", "mask"]
    names += [f"{k.split('_w')[0]} w={grid_w:g}" if "_w" in k else k for k in columns]
    names += ["target"]
    grid = image_grid(tiles)
    side = batch["source"].shape[-1]
    scale = max(1, 128 // side)
    grid = grid.resize((grid.width * scale, grid.height * scale), resample=0)
    header = 14
    canvas = grid.crop((0, -header, grid.width, grid.height))  # white-ish pad on top
    canvas.paste((255, 255, 255), (0, 0, grid.width, header))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(names):
        draw.text((scale * (2 + i * (side + 2)) + 2, 1), name.replace("_", " "), fill=(0, 0, 0))
    return canvas


def reappearance_plot(ws: list[float], summary: dict) -> Figure:
    """Reappearance rate vs w per prompt mode (95% interval bars), baselines as lines."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for mode in PROMPT_MODES:
        stats = [summary[method_key(mode, None if mode == "none" else w)]["reappeared"] for w in ws]
        mean = np.array([s["mean"] for s in stats]) * 100
        err = np.array([[s["mean"] - s["lo"], s["hi"] - s["mean"]] for s in stats]).T * 100
        label = "none (w has no effect)" if mode == "none" else mode
        style = "--" if mode == "none" else "-"
        axes.errorbar(ws, mean, yerr=err, marker="o", capsize=3, label=label, linestyle=style)
    for name, style in zip(BASELINES, (":", "-.", (0, (1, 3))), strict=True):
        rate = 100 * summary[name]["reappeared"]["mean"]
        axes.axhline(rate, color="grey", linestyle=style, label=name.replace("_", " "))
    axes.set_xlabel("guidance weight w")
    axes.set_ylabel("object reappeared (% of cases)")
    axes.set_xticks(ws)
    highest = max(100 * s["reappeared"]["hi"] for s in summary.values())
    axes.set_ylim(-2, max(10.0, 1.15 * highest))
    axes.set_title("Repeated-object removal (lower is better)")
    axes.legend(fontsize="small")
    return figure


def hole_mae_plot(summary: dict) -> Figure:
    """Hole MAE per method (95% interval bars): the real pairs' figure, no judge to plot."""
    from matplotlib.figure import Figure

    names = list(summary)
    stats = [summary[k]["hole_mae"] for k in names]
    mean = np.array([s["mean"] for s in stats])
    err = np.array([[s["mean"] - s["lo"], s["hi"] - s["mean"]] for s in stats]).T
    colours = ["tab:grey" if summary[k]["kind"] == "baseline" else "tab:blue" for k in names]
    figure = Figure(figsize=(max(6, 0.5 * len(names)), 4), layout="constrained")
    axes = figure.add_subplot()
    axes.bar(range(len(names)), mean, yerr=err, capsize=3, color=colours)
    axes.set_xticks(range(len(names)), [k.replace("_", " ") for k in names], rotation=60)
    axes.set_ylabel("hole MAE on [0,1] (95% interval)")
    axes.set_title("Removal on real pairs (lower is better; grey: baselines)")
    return figure


def log_to_mlflow(
    uri: str,
    experiment: str,
    run_name: str,
    out: Path,
    settings: dict,
    summary: dict,
    differences: dict,
    seconds: float,
) -> str:
    """A run holding the settings as params, every mean as a metric and --out as artifacts."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from dcgd.tracking.store import DEFAULT_ARTIFACT_DIR, is_local

    stamp = int(time.time() * 1000)
    metrics = [Metric("seconds", seconds, stamp, 0)]
    for key, stat in {**summary, **differences}.items():
        name = key.replace(" - ", "-minus-")
        for measure, value in stat.items():
            if isinstance(value, dict) and "mean" in value:
                metrics.append(Metric(f"{measure}/{name}", value["mean"], stamp, 0))
    params = [Param(k, str(v)[:6000]) for k, v in settings.items()]
    try:
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if is_local(uri):
                location = (Path(DEFAULT_ARTIFACT_DIR) / experiment).resolve().as_uri()
            experiment_id = client.create_experiment(experiment, location)
        else:
            experiment_id = found.experiment_id
        run = client.create_run(
            experiment_id,
            run_name=run_name,
            tags={"dcgd.role": "benchmark", "dcgd.benchmark": "removal"},
        )
        run_id = run.info.run_id
        client.log_batch(run_id, metrics=metrics, params=params)
        client.log_artifacts(run_id, str(out))
        client.set_terminated(run_id, "FINISHED")
    except Exception as err:
        raise TrackingError(
            f"MLflow at {uri} refused the benchmark run ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}); the results are in {out}; rerun with "
            "--no-mlflow or fix --tracking-uri"
        ) from None
    return run_id
