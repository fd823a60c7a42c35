"""The README's main job, shortened: a real fit of the quick-start config on built-in data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from dcgd.cli import main

QUICKSTART = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")
# Same config, smaller and shorter: 32 px, 60 steps (the real one: 64 px, 300 steps).
SHORT = [
    "--data.init_args.size", "32",
    "--trainer.max_steps", "60",
    "--trainer.val_check_interval", "30",
    "--trainer.log_every_n_steps", "1",
    "--model.init_args.val_steps", "4",
    "--data.init_args.val_per_bucket", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quickstart")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["fit", "--config", QUICKSTART, *SHORT]) == 0
    return workdir


def _run(workdir: Path):
    # A client on this store, not mlflow.set_tracking_uri: global state would leak into
    # other tests' MLflow calls.
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dcgd-quickstart")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_quickstart_leaves_checkpoint_config_and_mlflow_run(quickstart_run):
    root = quickstart_run / "runs" / "quickstart"
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert "DCGDModule" in (root / "config.yaml").read_text()
    run = _run(quickstart_run)
    assert run.info.status == "FINISHED"
    assert {"train/loss", "val/loss", "val/mae"} <= set(run.data.metrics)
    client = MlflowClient(f"sqlite:///{quickstart_run / 'mlflow.db'}")
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config.yaml" in top
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "grids")]
    assert grids, "no image grid logged"
    # The artifact store is the explicit local folder, not MLflow 3's refused ./mlruns.
    local = Path(run.info.artifact_uri.removeprefix("file://"))
    assert local.is_relative_to(quickstart_run / "mlartifacts")
    grid = np.asarray(Image.open(local / grids[-1]))
    # source | mask | result | target, 32 px tiles with 2 px padding, one row per sample.
    assert grid.shape[1] == 4 * 32 + 5 * 2


@pytest.mark.slow
def test_quickstart_loss_falls(quickstart_run):
    client = MlflowClient(f"sqlite:///{quickstart_run / 'mlflow.db'}")
    history = client.get_metric_history(_run(quickstart_run).info.run_id, "train/loss")
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert len(losses) >= 50
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


@pytest.mark.slow
def test_resume_continues_the_same_mlflow_run(quickstart_run, monkeypatch):
    monkeypatch.chdir(quickstart_run)
    before = _run(quickstart_run).info.run_id
    argv = ["fit", "--config", QUICKSTART, *SHORT, "--trainer.max_steps", "64"]
    assert main([*argv, "--ckpt_path", "last"]) == 0
    run = _run(quickstart_run)  # still exactly one run
    assert run.info.run_id == before
    client = MlflowClient(f"sqlite:///{quickstart_run / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(before, "train/loss")]
    assert max(steps) >= 62  # the resumed steps were logged to it


@pytest.mark.slow
def test_requeued_slurm_job_resumes_from_its_hpc_checkpoint_into_the_same_run(
    quickstart_run, monkeypatch
):
    import shutil

    import torch

    monkeypatch.chdir(quickstart_run)
    root = quickstart_run / "runs" / "quickstart"
    step = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    # What Lightning writes on SIGUSR1 before requeueing; a lower-numbered stale one too.
    shutil.copy(root / "checkpoints" / "last.ckpt", root / "hpc_ckpt_2.ckpt")
    shutil.copy(root / "checkpoints" / "last.ckpt", root / "hpc_ckpt_10.ckpt")
    before = _run(quickstart_run).info.run_id
    argv = ["fit", "--config", QUICKSTART, *SHORT, "--trainer.max_steps", str(step + 2)]
    assert main(argv) == 0  # no --ckpt_path: the requeued job's command line
    assert _run(quickstart_run).info.run_id == before
    client = MlflowClient(f"sqlite:///{quickstart_run / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(before, "train/loss")]
    assert max(steps) >= step  # continued from the hpc checkpoint, not from step 0


def test_hpc_checkpoint_is_the_highest_numbered(tmp_path):
    from dcgd.cli.lightning import hpc_checkpoint

    assert hpc_checkpoint(tmp_path) is None
    for name in ("hpc_ckpt_2.ckpt", "hpc_ckpt_10.ckpt", "hpc_ckpt_x.ckpt", "last.ckpt"):
        (tmp_path / name).write_bytes(b"")
    assert hpc_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"
