"""Time a training step with each speed switch of ``DCGDModule`` against the default.

    python -m dcgd.benchmarks.switches [--resolution 64] [--batch 2] [--rounds 3] [--only ...]

The module, batch and timed Lightning loop are those of ``python -m dcgd bench``
(``dcgd.benchmarks.speed``: tiny VAE + U-Net, ``inpaint`` layout, the same batch every step).
Variants run round-robin (A B C ... A B C ...) so drift in a shared machine's speed hits all
of them; each figure is the median step time of a variant's best round. ``cache_encodings``
sees the same batch every step: its best case (every encoding is a hit after the first step).
``compile_unet`` (inductor) compiles for minutes on a CPU: it runs only when named in
``--only`` (e.g. ``--only default compile_unet``).
It measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dcgd.benchmarks.speed import (
    Settings,
    build_module,
    example_batch,
    lightning_training,
)
from dcgd.devices import resolve_device

if TYPE_CHECKING:
    from dcgd.training.module import DCGDModule

# name -> (DCGDModule switches, Trainer precision "32" / "bf16"); the first is the baseline.
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "default": ({}, "32"),  # SDPA attention, fp32
    "classic_attention": ({"attention": "classic"}, "32"),
    "channels_last": ({"channels_last": True}, "32"),
    "gradient_checkpointing": ({"gradient_checkpointing": True}, "32"),
    "fused_optimizer": ({"fused_optimizer": True}, "32"),
    "cache_encodings": ({"cache_encodings": True}, "32"),
    "bf16_mixed": ({}, "bf16"),
    "compile_unet": ({"compile_unet": True}, "32"),  # inductor: minutes to compile on a CPU
}


def build(settings: Settings, switches: dict[str, Any]) -> DCGDModule:
    """The bench's module (``dcgd.benchmarks.speed.build_module``) with ``switches`` on."""
    return build_module(replace(settings, module={**settings.module, **switches}))


def run(settings: Settings, rounds: int, variants: dict[str, tuple[dict, str]]) -> dict:
    device = resolve_device(settings.device)
    batch = example_batch(settings, device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (switches, precision) in variants.items():
            run_settings = Settings(**{**vars(settings), "precision": precision})
            module = build(run_settings, switches).to(device)
            seconds = lightning_training(
                module, batch, settings.train_steps, settings.warmup, run_settings
            )
            times[name].append(seconds)
    base = min(times["default"])
    return {
        name: {"s_per_step": min(t), "vs_default": min(t) / base, "rounds": t}
        for name, t in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(VARIANTS),
        help="variants to run (default: all "
        "but compile_unet); the baseline 'default' is always run",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(
        resolution=args.resolution,
        batch=args.batch,
        train_steps=args.train_steps,
        warmup=args.warmup,
    )
    names = ["default", *(args.only or [n for n in VARIANTS if n != "compile_unet"])]
    variants = {name: VARIANTS[name] for name in dict.fromkeys(names)}
    results = run(settings, args.rounds, variants)
    print(f"{'variant':28s} {'s/step':>8s} {'vs default':>10s}")
    for name, r in results.items():
        print(f"{name:28s} {r['s_per_step']:8.4f} {r['vs_default']:10.2f}")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(settings), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
