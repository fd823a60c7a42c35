"""Training sweeps: each trial a real fit of the quick-start config with the trial's overrides,
in its own run directory, logged into its MLflow child run, pruned from val/loss."""

from __future__ import annotations

import sys

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from dcgd.cli import main
from tests.sweeps.conftest import QUICKSTART

# The quick start at 32 px, batches of 2, validating after every step on one batch.
TINY_FIT = [
    "--trainer.max_steps", "1",
    "--data.init_args.batch_size", "2",
    "--trainer.val_check_interval", "1",
    "--trainer.limit_val_batches", "1",
    "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false",
    "--data.init_args.size", "32",
    "--data.init_args.val_per_bucket", "1",
    "--model.init_args.val_steps", "2",
    "--model.init_args.grid_samples", "0",
]  # fmt: skip


def _spec(path, **changes):
    spec = {
        "study": "train",
        "kind": "training",
        "sampler": "grid",
        "search_space": {"model.init_args.loss": ["combined", "branches"]},
        "objective": {"metric": "mae", "bucket": "all", "direction": "minimize"},
        "training": {"config": [str(QUICKSTART)], "args": TINY_FIT, "root": "runs/sweeps"},
        "inference": {"steps": 2},
        "tracking": {"experiment": "train"},
        **changes,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def _study(workdir, name="train"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/sweeps/optuna.db")


@pytest.mark.slow
def test_each_trial_is_a_fit_with_its_overrides_in_its_own_run(workdir):
    assert main(["sweep", "--config", str(_spec(workdir / "train.yaml"))]) == 0

    trials = _study(workdir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    for trial in trials:
        run_dir = workdir / "runs" / "sweeps" / "train" / f"trial-{trial.number:04d}"
        saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
        assert saved["hyper_parameters"]["loss"] == trial.params["model.init_args.loss"]
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        # The fit logged into the trial's child run; the sweep added the per-bucket scores.
        assert "val/loss" in run.data.metrics
        assert {"mae/all", "mae/0.3-0.4", "psnr/all", "objective"} <= set(run.data.metrics)
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        assert run.data.params["run_dir"] == str(run_dir)
        assert (
            run.data.tags["mlflow.parentRunId"]
            == _study(workdir).user_attrs["mlflow_parent_run_id"]
        )
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_a_trial_is_pruned_from_its_validation_loss_in_a_launched_fit(workdir):
    # ThresholdPruner(upper=0): any positive val/loss prunes at the first validation (step 1).
    # The fit runs as a child process through --launcher, as under srun / torchrun: it reports
    # to the trial through the storage, and the sweep reads the decision after it exits.
    spec = _spec(
        workdir / "prune.yaml",
        study="prune",
        search_space={"model.init_args.loss": ["combined"]},
        training={
            "config": [str(QUICKSTART)],
            "args": [*TINY_FIT, "--trainer.max_steps", "2"],  # would validate at steps 1, 2
        },
        pruning={"pruner": "threshold", "monitor": "val/loss", "upper": 0.0},
    )
    launcher = f"{sys.executable} -m dcgd"
    assert main(["sweep", "--config", str(spec), "--launcher", launcher]) == 0
    [trial] = _study(workdir, "prune").trials
    assert trial.state == TrialState.PRUNED
    # Only step 1 was reported: the fit stopped there instead of validating again at step 2.
    assert list(trial.intermediate_values) == [1]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.tags["optuna.state"] == "PRUNED"
    assert "objective" not in run.data.metrics
