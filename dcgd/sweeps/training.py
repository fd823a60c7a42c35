"""Training trials: each trial is a ``fit`` with the trial's config overrides, in its own run
directory, scored afterwards on the fixed validation set like an inference trial.

    kind: training
    search_space:
      model.init_args.layout: [paper, paper_mask, inpaint]   # any key of the fit config
      model.init_args.lr: {low: 1.0e-5, high: 1.0e-3, log: true}
    training:
      config: [experiments/quickstart.yaml]   # the fit configs, composed in order
      args: [--trainer.max_steps, "3000"]      # fixed overrides for every trial
      root: runs/sweeps                        # trial run dirs: <root>/<study>/trial-0007
      launcher: null     # null: fit inside this process; for DDP, a prefix that runs dcgd,
                         # e.g. "srun python -m dcgd" or "torchrun --nproc_per_node=4 -m dcgd"
    pruning: {pruner: median, monitor: val/loss, n_warmup_steps: 2}
    inference: {steps: 25, lpips: [alex]}      # how the trained model is scored

The trial's MLflow child run is the fit's run too (loss curves, config, grids), so a trial's
whole story sits under the study's parent run. Keys are checked against the real config
parser before the first trial, so a typo fails in seconds, not after hours of training.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from dcgd.errors import ConfigError, DCGDError
from dcgd.sweeps.runner import TrialContext, TrialResult
from dcgd.sweeps.spec import SweepSpec

SETTINGS = ("config", "args", "root", "launcher")


class FitFailed(RuntimeError):
    """A trial's fit died (not a configuration error): the trial is retried."""


def cli_value(value: Any) -> str:
    """A value as the config parser reads it from the command line (YAML; JSON is YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


class TrainingTrials:
    def __init__(self, spec: SweepSpec) -> None:
        settings = dict(spec.training)
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise ConfigError(
                f"training: unknown field(s) {sorted(unknown)}; known: {', '.join(SETTINGS)}"
            )
        configs = settings["config"]
        self.configs = [configs] if isinstance(configs, str) else list(configs)
        self.args = [str(a) for a in settings.get("args") or []]
        self.root = Path(settings.get("root") or "runs/sweeps").resolve() / spec.study
        launcher = settings.get("launcher")
        self.launcher = shlex.split(launcher) if isinstance(launcher, str) else launcher
        self.spec = spec

    # ------------------------------------------------------------------ checks
    def _fit_args(self, params: dict[str, Any], extra: list[str]) -> list[str]:
        args = [a for c in self.configs for a in ("--config", str(c))] + self.args
        for key, value in params.items():
            args += [f"--{key}", cli_value(value)]
        return args + extra

    def prepare(self) -> None:
        """Parse the fit config with every swept key (at its first value): an unknown key or a
        bad value fails here, before the first trial, with the config parser's message."""
        from dcgd.cli.lightning import run_lightning

        for config in self.configs:
            if not Path(config).is_file():
                raise ConfigError(f"training.config {config} does not exist")
        probe = {p.name: p.choices[0] if p.choices else p.low for p in self.spec.space}
        for p in self.spec.space:
            if p.integer and p.choices is None:
                probe[p.name] = int(p.low)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            run_lightning(
                "fit", self._fit_args(probe, self._tracking_args(None) + ["--print_config"])
            )
        config = yaml.safe_load(printed.getvalue()) or {}
        from dcgd.data.buckets import BUCKET_NAMES

        buckets = ((config.get("data") or {}).get("init_args") or {}).get("buckets")
        lpips = list(self.spec.inference.get("lpips") or [])
        names = ["psnr", "ssim", "mae", *[f"lpips_{n}" for n in lpips]]
        self.spec.objective.check(names, buckets or BUCKET_NAMES, "the trained model's evaluation")

    def fixed_params(self) -> dict[str, Any]:
        return {
            "training.config": ",".join(map(str, self.configs)),
            "training.args": " ".join(self.args),
        }

    # ------------------------------------------------------------------ one trial
    def _tracking_args(self, context: TrialContext | None) -> list[str]:
        """The fit logs into the trial's child run (its parent is the study's run)."""
        args = ["--trainer.logger.class_path", "dcgd.tracking.mlflow.MLflowLogger"]
        if context is not None:
            args += [
                "--trainer.logger.init_args.run_id", context.run_id,
                "--trainer.logger.init_args.tracking_uri", context.tracking_uri,
                "--trainer.logger.init_args.experiment_name", context.experiment,
            ]  # fmt: skip
        return args

    def _pruning_args(self, context: TrialContext) -> list[str]:
        """The pruning callback; it finds the storage in $DCGD_SWEEP_STORAGE, so the URL (and
        its password) stays out of the command line and the config saved to MLflow."""
        if self.spec.pruning.get("pruner", "none") == "none":
            return []
        init = {
            "study_name": context.study_name,
            "trial_id": context.trial_id,
            "monitor": self.spec.pruning["monitor"],
            "pruning": self.spec.pruning,
        }
        callback = {"class_path": "dcgd.sweeps.pruning.TrialPruning", "init_args": init}
        return [f"--trainer.callbacks+={json.dumps(callback)}"]

    def run(self, params: dict[str, Any], context: TrialContext) -> TrialResult:
        from dcgd.sweeps.pruning import raise_if_pruned
        from dcgd.sweeps.storage import STORAGE_ENV

        run_dir = self.root / f"trial-{context.number:04d}"
        extra = [
            "--trainer.default_root_dir", str(run_dir),
            "--checkpoint.dirpath", str(run_dir / "checkpoints"),
            *self._tracking_args(context),
            *self._pruning_args(context),
        ]  # fmt: skip
        args = ["fit", *self._fit_args(params, extra)]
        saved = os.environ.get(STORAGE_ENV)
        os.environ[STORAGE_ENV] = context.storage_url
        try:
            if self.launcher:
                code = subprocess.run([*self.launcher, *args], check=False).returncode
            else:
                from dcgd.cli.lightning import run_lightning

                code = run_lightning("fit", args[1:])  # a config error raises ConfigError
        finally:
            if saved is None:
                os.environ.pop(STORAGE_ENV, None)
            else:
                os.environ[STORAGE_ENV] = saved
        if code == 2 and self.launcher:  # dcgd's exit code for a user error (bad config)
            raise DCGDError(f"the fit of trial {context.number} refused its configuration")
        if code != 0:  # a crash, OOM, preemption, Ctrl-C: the trial is queued again
            raise FitFailed(f"the fit of trial {context.number} exited with code {code}")
        raise_if_pruned(context.storage, context.trial_id)
        return self.evaluate(run_dir)

    def evaluate(self, run_dir: Path) -> TrialResult:
        """Score the trained model (``last.ckpt``) like an inference trial, at its own w and
        prompt mode, on the fixed evaluation set of the config it was trained with."""
        from dcgd.sweeps.inference import InferenceTrials

        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            raise DCGDError(f"the fit left no {checkpoint}; cannot score the trial")
        settings = {**self.spec.inference, "data_config": str(run_dir / "config.yaml")}
        scorer = InferenceTrials(replace(self.spec, inference=settings), checkpoint)
        scorer.prepare()
        result = scorer.run({})
        return replace(result, params={**result.params, "run_dir": str(run_dir)})
