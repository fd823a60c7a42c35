"""``python -m dcgd sweep --config sweeps/<x>.yaml``: run, join or resume an Optuna sweep.

Start the same command on as many processes / machines as you like: with a shared
``--storage`` (PostgreSQL for a cluster, a journal file on a shared file system) they work
on one study, and together run the spec's ``n_trials`` trials. Re-running a finished sweep
runs nothing; a larger ``--n-trials`` runs only the difference. See ``dcgd.sweeps`` for the
spec format and ``sweeps/`` for examples.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dcgd.errors import ConfigError

if TYPE_CHECKING:
    from dcgd.sweeps.function import FunctionTrials
    from dcgd.sweeps.inference import InferenceTrials
    from dcgd.sweeps.spec import SweepSpec
    from dcgd.sweeps.training import TrainingTrials

HELP = "run or join an Optuna sweep (w / prompt-mode ablation of a checkpoint, or training)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="sweep spec (YAML)")
    parser.add_argument(
        "--checkpoint", type=Path, help="inference sweeps: the .ckpt to sample (or in the spec)"
    )
    parser.add_argument(
        "--storage",
        help="Optuna storage URL (default $DCGD_SWEEP_STORAGE, else sqlite:///sweeps/optuna.db); "
        "postgresql://user:pass@host:5432/db to share one study across machines (the "
        "variable keeps the password off the command line), or journal:///path/optuna.log "
        "for machines that share only a file system (NFS)",
    )
    parser.add_argument(
        "--n-trials", type=int, help="total trials of the study (overrides the spec's n_trials)"
    )
    parser.add_argument(
        "--launcher",
        help="training sweeps: run each fit as a child through this prefix, e.g. "
        "'srun python -m dcgd' or 'torchrun --nproc_per_node=4 -m dcgd' (default: in-process)",
    )
    parser.add_argument(
        "--fit-args",
        help="training sweeps: extra fit options for every trial, in one string, e.g. "
        "'--trainer.devices 4 --trainer.strategy ddp' (appended to the spec's training.args)",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: the spec's, $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)",
    )


def build_trials(
    spec: SweepSpec, checkpoint: Path | None
) -> InferenceTrials | TrainingTrials | FunctionTrials:
    """The trial kind of a spec (imports only what that kind needs)."""
    if checkpoint is not None and spec.kind != "inference":
        raise ConfigError(f"--checkpoint applies to inference sweeps; this one is {spec.kind}")
    if spec.kind == "inference":
        from dcgd.sweeps.inference import InferenceTrials

        return InferenceTrials(spec, checkpoint)
    if spec.kind == "training":
        from dcgd.sweeps.training import TrainingTrials

        return TrainingTrials(spec)
    from dcgd.sweeps.function import FunctionTrials

    return FunctionTrials(spec)


def run(args: argparse.Namespace) -> int:
    import os
    import shlex
    from dataclasses import replace

    from dcgd.sweeps.runner import run_sweep
    from dcgd.sweeps.spec import load_spec
    from dcgd.sweeps.storage import STORAGE_ENV

    storage = args.storage or os.environ.get(STORAGE_ENV) or None
    spec = load_spec(args.config).with_overrides(n_trials=args.n_trials, storage=storage)
    if args.tracking_uri:
        spec = replace(spec, tracking_uri=args.tracking_uri)
    if args.launcher or args.fit_args:
        if spec.kind != "training":
            raise ConfigError(
                f"--launcher / --fit-args apply to training sweeps; this one is {spec.kind}"
            )
        training = dict(spec.training)
        if args.launcher:
            training["launcher"] = args.launcher
        if args.fit_args:
            training["args"] = [*(training.get("args") or []), *shlex.split(args.fit_args)]
        spec = replace(spec, training=training)
    report = run_sweep(spec, build_trials(spec, args.checkpoint))
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(report.states.items()))
    print(f"\ndcgd sweep: study {report.study!r} in {report.storage}: {states or 'no trials'}")
    print(f"  this worker ran {len(report.ran)} trial(s)")
    if report.best_number is not None:
        print(
            f"  best trial {report.best_number}: objective {report.best_value:.6g} "
            f"with {report.best_params}"
        )
    print(
        f"  compare with: python -m dcgd compare --experiment {report.experiment} "
        f"--parent {report.parent_run_id}"
    )
    return 0
