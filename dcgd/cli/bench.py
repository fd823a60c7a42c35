"""``python -m dcgd bench``: our sampling and training speed next to references, same process.

Prints seconds per image (sampling) and samples per second (training) for dcgd and for the
reference (diffusers' inpainting pipeline; a bare PyTorch loop), their ratios, peak GPU
memory, the FLOPs of one training step (PyTorch's FlopCounterMode), the FLOP/s achieved and
model FLOP utilisation. ``--json F`` writes them, with the ratios under the keys
``sampling_ratio_vs_diffusers`` and ``train_ratio_vs_bare_loop`` (our time over the
reference's). ``--model-size sd15`` builds the Stable Diffusion 1.5-sized U-Net, VAE and text
encoder with random weights (no download): for a GPU.

Sampling is also timed compiled (``DCGDPipeline.compile``: ``torch.compile`` of the U-Net and
VAE, inductor with frozen weights), under ``compiled_ratio_vs_diffusers``, after checking that
its images are eager's up to float rounding (it refuses to report a faster wrong result);
``--compile-reference`` compiles diffusers' pipeline alike for a like-for-like figure. The
compile itself (tens of seconds on a CPU) is reported, not timed. How quality trades against
time per sampler and step count needs a trained model: ``python -m dcgd benchmark
time-to-quality``.
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict, fields
from pathlib import Path

import torch

from dcgd.benchmarks.speed import MODEL_SIZES, Settings, bench_sampling, bench_training
from dcgd.cli.options import add_device_argument
from dcgd.errors import ConfigError
from dcgd.files import read_yaml

HELP = "measure sampling / training speed against diffusers and a bare PyTorch loop"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    parser.add_argument(
        "--config", type=Path, help="YAML file of the options below (command line wins)"
    )
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default=defaults.model_size)
    parser.add_argument("--resolution", type=int, default=defaults.resolution, help="pixels")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="images per batch")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="sampling steps")
    parser.add_argument("--train-steps", type=int, default=defaults.train_steps)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument(
        "--repeats",
        type=int,
        default=defaults.repeats,
        help="timed sampling runs of each side; alternated training rounds (best counts)",
    )
    parser.add_argument("--w", type=float, default=defaults.w, help="guidance weight")
    parser.add_argument("--precision", choices=("32", "bf16"), default=defaults.precision)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=defaults.compile,
        help="sampling: also time dcgd compiled (DCGDPipeline.compile: inductor, frozen "
        "weights; tens of seconds to compile on a CPU, not timed); --no-compile skips it",
    )
    parser.add_argument(
        "--compile-reference",
        action="store_true",
        default=defaults.compile_reference,
        help="sampling: also time diffusers' pipeline compiled the same way (needs --compile)",
    )
    parser.add_argument(
        "--compile-backend",
        default=defaults.compile_backend,
        help="torch.compile backend of --compile (default inductor; 'eager' only captures "
        "graphs, to check the path quickly)",
    )
    add_device_argument(parser, default=defaults.device)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=defaults.peak_tflops,
        help="the device's peak dense TFLOP/s at --precision, for model FLOP utilisation "
        "(default: known GPUs from their data sheets; none on a CPU)",
    )
    parser.add_argument(
        "--module",
        type=json.loads,
        default=defaults.module,
        help='DCGDModule arguments as JSON, e.g. \'{"attention": "classic"}\' (dcgd side only)',
    )
    parser.add_argument(
        "--only", choices=("sampling", "training"), help="run one of the two benchmarks"
    )
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")


def settings_from(args: argparse.Namespace) -> Settings:
    values = {f.name: getattr(args, f.name) for f in fields(Settings)}
    if args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"bench config {args.config} does not exist")
        given = read_yaml(args.config, "bench config") or {}
        if not isinstance(given, dict):
            raise ConfigError(f"bench config {args.config} must be a mapping of bench options")
        names = {f.name for f in fields(Settings)}
        unknown = sorted(set(k.replace("-", "_") for k in given) - names)
        if unknown:
            raise ConfigError(
                f"unknown bench option(s) {unknown} in {args.config}; known: {sorted(names)}"
            )
        defaults = asdict(Settings())
        for key, value in given.items():
            key = key.replace("-", "_")
            if values[key] == defaults[key]:  # not set on the command line
                values[key] = value
    if not isinstance(values["module"], dict):
        raise ConfigError(f"--module must be a JSON object; got {values['module']!r}")
    settings = Settings(**values)
    if settings.compile_reference and not settings.compile:
        raise ConfigError("--compile-reference compares against dcgd compiled: drop --no-compile")
    if settings.resolution % 8:
        raise ConfigError(f"--resolution must be a multiple of 8; got {settings.resolution}")
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no GPU here")
    return settings


def machine() -> dict[str, str]:
    info = {"platform": platform.platform(), "torch": torch.__version__}
    info["cpu_threads"] = str(torch.get_num_threads())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_compiled(report: dict) -> None:
    if "compiled_s_per_image" in report:
        print(
            f"sampling  compiled: dcgd {report['compiled_s_per_image']:.4f} s/image, ratio "
            f"{report['compiled_ratio_vs_diffusers']:.3f} against diffusers (eager); "
            f"{report['compile_s']:.0f} s to compile, outputs within "
            f"{report['compiled_max_abs_difference']:.1e} of eager"
        )
    if "diffusers_compiled_s_per_image" in report:
        print(
            f"sampling  diffusers compiled alike: {report['diffusers_compiled_s_per_image']:.4f}"
            f" s/image, dcgd compiled / diffusers compiled "
            f"{report['compiled_ratio_vs_diffusers_compiled']:.3f}"
        )


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    report: dict = {"settings": asdict(settings), "machine": machine()}
    # Each benchmark and its summary line (formatted with the settings s and the report r).
    parts = (
        (
            "sampling",
            bench_sampling,
            "sampling  {s.steps} steps: dcgd {r[sampling_s_per_image]:.4f} s/image, "
            "diffusers {r[diffusers_s_per_image]:.4f} s/image, "
            "ratio {r[sampling_ratio_vs_diffusers]:.3f}",
        ),
        (
            "training",
            bench_training,
            "training  batch {s.batch}: dcgd (Lightning) {r[train_samples_per_s]:.2f} samples/s, "
            "bare loop {r[bare_loop_samples_per_s]:.2f} samples/s, "
            "ratio {r[train_ratio_vs_bare_loop]:.3f}",
        ),
    )
    for part, bench, summary in parts:
        if args.only in (None, part):
            report.update(bench(settings))
            print(summary.format(s=settings, r=report))
            if part == "sampling":
                print_compiled(report)
    if "train_achieved_tflops" in report:
        mfu = report["train_mfu"]
        print(
            f"training  {report['train_tflops_per_step']:.4g} TFLOP per step, "
            f"{report['train_achieved_tflops']:.4g} TFLOP/s achieved, model FLOP utilisation "
            + (f"{mfu:.1%}" if mfu is not None else "n/a (give --peak-tflops)")
        )
    for key in ("sampling_peak_gib", "train_peak_gib"):
        if report.get(key) is not None:
            print(f"{key}: {report[key]:.2f} GiB")
    print("ratios are our time over the reference's (< 1: faster)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0
