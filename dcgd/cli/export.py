"""``python -m dcgd export``: a trained checkpoint as a self-contained, Lightning-free folder.

Writes ``unet/ vae/ text_encoder/ tokenizer/ scheduler/`` (diffusers / transformers
``save_pretrained``) and ``dcgd_pipeline.json`` (layout, latent space, resolution, sampling
defaults). ``python -m dcgd remove --checkpoint DIR`` and
``dcgd.sampling.pipeline.load_pipeline(DIR)`` load it without the Stable Diffusion model it
was fine-tuned from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dcgd.errors import DataError
from dcgd.files import check_out_folder, write_folder_atomic

HELP = "write a checkpoint as a diffusers-style folder that 'remove' and Python load"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .ckpt from 'dcgd fit'")
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    parser.add_argument(
        "--no-ema", action="store_true", help="export the raw weights instead of the EMA"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing export in --out"
    )


def check_out(out: Path, overwrite: bool, settings_file: str) -> None:
    """``--out`` is new or empty, or (with --overwrite) a previous export: never other files."""
    check_out_folder(out, "--out", overwrite, "export")
    if out.is_dir() and any(out.iterdir()) and not (out / settings_file).is_file():
        raise DataError(
            f"--out {out} exists and is not empty, and is not a dcgd export ({settings_file} "
            "is missing); --overwrite replaces only a previous export: choose a new folder"
        )


def run(args: argparse.Namespace) -> int:
    from dcgd.sampling.pipeline import SETTINGS_FILE, DCGDPipeline

    out: Path = args.out
    check_out(out, args.overwrite, SETTINGS_FILE)
    pipeline = DCGDPipeline.from_checkpoint(args.checkpoint, use_ema=not args.no_ema)
    # Written next to --out and renamed into place: a failed export leaves the previous one
    # whole, and a replaced one keeps no file of the model before (a vae/ of a VAE model).
    write_folder_atomic(out, pipeline.save_pretrained)
    settings = json.dumps({k: v for k, v in vars(pipeline.settings).items()})
    print(f"dcgd export: {args.checkpoint} -> {out}\n  settings {settings}")
    return 0
