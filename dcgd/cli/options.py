"""Command-line options several commands declare the same way (no torch import: ``--help``
stays fast)."""

from __future__ import annotations

import argparse


def add_device_argument(
    parser: argparse.ArgumentParser, default: str = "auto", use: str = ""
) -> None:
    """``--device``, read by :func:`dcgd.devices.resolve_device`; ``use`` says what runs on
    it (e.g. ``" for LPIPS / FID"``)."""
    parser.add_argument(
        "--device",
        default=default,
        help=f"torch device{use}: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ... "
        f"(default {default})",
    )
