"""``python -m dcgd compare [--experiment NAME]``: a sweep's trials side by side, from MLflow.

Without ``--experiment``, the experiment of the most recently started sweep, named on stderr.

Rows are trials, or with ``--rows prompt_mode`` (any swept parameter) the best trial of each
value; columns are metrics per mask-ratio bucket, the best of each column marked. ``--plot``
writes metric-vs-w curves per prompt mode and per-bucket bars.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "compare a sweep's trials from MLflow: table per bucket (md/csv) and plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment",
        help="MLflow experiment of the sweep (default: the one of the most recent sweep)",
    )
    parser.add_argument(
        "--parent", help="the study's parent run (id or name); default: the latest study"
    )
    parser.add_argument("--format", choices=("md", "csv"), default="md", help="table format")
    parser.add_argument(
        "--rows",
        default="trials",
        help="'trials' (default) or a parameter, e.g. prompt_mode: its best trial per value",
    )
    parser.add_argument("--metrics", help="comma-separated metrics to show (default: all)")
    parser.add_argument("--plot", type=Path, help="write the plots (PNG) into this folder")
    parser.add_argument("--x", default="w", help="parameter on the x axis of the curves")
    parser.add_argument(
        "--group", default="prompt_mode", help="parameter whose values get one curve / bar each"
    )
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )


def run(args: argparse.Namespace) -> int:
    from dcgd.sweeps.comparison import latest_sweep_experiment, load_comparison

    experiment = args.experiment
    if experiment is None:
        experiment = latest_sweep_experiment(args.tracking_uri)
        # On stderr: stdout stays the table (a clean CSV in csv mode).
        print(
            f"compare: no --experiment given; using {experiment!r}, the experiment of the "
            "most recent sweep",
            file=sys.stderr,
        )
    comparison = load_comparison(experiment, args.parent, args.tracking_uri)
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    if args.format == "csv":
        text = comparison.to_csv(args.rows, metrics)
    else:
        text = comparison.to_markdown(args.rows, metrics)
    print(text, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    if args.format == "md":
        print(
            f"\nstudy {comparison.study!r} (parent run {comparison.parent_run_id}), "
            f"{len(comparison.frame)} completed trials; objective: {comparison.direction}"
        )
    if args.plot:
        written = comparison.plot(args.plot, x=args.x, group=args.group)
        where = "\n  ".join(str(p) for p in written)
        # To stderr in csv mode, so that stdout stays a clean CSV.
        stream = sys.stderr if args.format == "csv" else sys.stdout
        print(f"plots ({len(written)}):\n  {where}", file=stream)
    return 0
