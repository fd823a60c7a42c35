"""The issue's "done when": the shipped quick-start ablation (4 prompt modes x 3 values of w)
runs on a trained checkpoint, and ``compare`` turns its MLflow runs into a table and plots."""

from __future__ import annotations

import ast
import csv
import io
from dataclasses import replace

import optuna
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

import dcgd.sweeps.inference as inference
from dcgd.cli import main
from dcgd.errors import ConfigError
from dcgd.sweeps.spec import load_spec
from tests.compiling import compile_on_eager_backend
from tests.sweeps.conftest import REPO

SPEC = REPO / "sweeps" / "quickstart_ablation.yaml"
MODES = ["none", "positive", "negative", "dual"]
BUCKETS = ["0.01-0.1", "0.1-0.2", "0.2-0.3", "0.3-0.4", "all"]


@pytest.fixture(scope="module")
def ablation(tiny_checkpoint, tmp_path_factory):
    """The shipped spec, verbatim, on the tiny checkpoint, in a fresh working directory."""
    workdir = tmp_path_factory.mktemp("ablation")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["sweep", "--config", str(SPEC), "--checkpoint", str(tiny_checkpoint)]) == 0
    return workdir


@pytest.mark.slow
def test_the_ablation_covers_every_prompt_mode_and_w_once(ablation):
    study = optuna.load_study(
        study_name="quickstart-ablation", storage=f"sqlite:///{ablation}/sweeps/optuna.db"
    )
    trials = study.get_trials()
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    pairs = sorted((t.params["prompt_mode"], t.params["w"]) for t in trials)
    assert pairs == sorted((m, w) for m in MODES for w in (1.0, 1.5, 3.0))


@pytest.mark.slow
def test_each_trial_is_a_child_run_with_params_bucket_metrics_and_a_grid(ablation):
    client = MlflowClient(f"sqlite:///{ablation}/mlflow.db")
    experiment = client.get_experiment_by_name("dcgd-quickstart-ablation")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    [parent] = [r for r in runs if r.data.tags.get("dcgd.role") == "study"]
    children = [r for r in runs if r.data.tags.get("dcgd.role") == "trial"]
    assert len(children) == 12
    assert parent.info.status == "FINISHED"
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["prompt_mode"] in MODES
        assert float(run.data.params["w"]) in (1.0, 1.5, 3.0)
        for metric in ("psnr", "ssim", "mae"):
            assert {f"{metric}/{b}" for b in BUCKETS} <= set(run.data.metrics)
        assert run.data.metrics["objective"] == run.data.metrics["mae/0.3-0.4"]
        [grid] = [a.path for a in client.list_artifacts(run.info.run_id, "grids")]
        image = Image.open(client.download_artifacts(run.info.run_id, grid))
        assert image.width == 4 * 32 + 5 * 2  # source | mask | result | target at 32 px
    # Different prompt modes really sample differently (the guidance reached the model).
    dual = {r.data.metrics["psnr/all"] for r in children if r.data.params["prompt_mode"] == "dual"}
    none = {r.data.metrics["psnr/all"] for r in children if r.data.params["prompt_mode"] == "none"}
    assert dual != none


@pytest.mark.slow
def test_compare_csv_lists_every_prompt_mode_and_writes_plots(ablation, capsys, monkeypatch):
    monkeypatch.chdir(ablation)
    plots = ablation / "plots"
    argv = ["compare", "--experiment", "dcgd-quickstart-ablation", "--format", "csv"]
    assert main([*argv, "--plot", str(plots)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    trials, best = rows[:-1], rows[-1]
    assert len(trials) == 12
    assert {r["prompt_mode"] for r in trials} == set(MODES)
    assert best["trial"] == "best"
    lowest = min(trials, key=lambda r: float(r["mae/0.3-0.4"]))
    assert lowest["trial"] in best["mae/0.3-0.4"].split(";")
    for metric in ("psnr", "ssim", "mae"):
        for name in (f"{metric}_vs_w.png", f"{metric}_per_bucket.png"):
            with Image.open(plots / name) as image:
                assert image.width > 100 and image.height > 100

    # One row per prompt mode: the best trial of each.
    assert main([*argv, "--rows", "prompt_mode"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))[:-1]
    assert [r["prompt_mode"] for r in rows] == MODES
    by_mode = {m: [r for r in trials if r["prompt_mode"] == m] for m in MODES}
    for row in rows:
        assert float(row["mae/0.3-0.4"]) == min(
            float(r["mae/0.3-0.4"]) for r in by_mode[row["prompt_mode"]]
        )


def test_inference_trials_import_neither_lightning_nor_the_training_code():
    """They sample through the inference pipeline alone (dcgd.sampling.pipeline)."""
    tree = ast.parse(open(inference.__file__, encoding="utf-8").read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert not [
        name
        for name in imported
        if name.split(".")[0] in ("lightning", "pytorch_lightning")
        or name.startswith("dcgd.training")
    ]


@pytest.mark.slow
def test_one_pipeline_per_use_ema_value_loaded_on_first_use_and_kept(tiny_checkpoint, monkeypatch):
    loaded, load = [], inference.load_pipeline

    def counting(path, use_ema=True):
        loaded.append(use_ema)
        return load(path, use_ema=use_ema)

    monkeypatch.setattr(inference, "load_pipeline", counting)
    spec = load_spec(SPEC)
    trials = inference.InferenceTrials(replace(spec, inference={"split": "val"}), tiny_checkpoint)
    trials.prepare()
    assert loaded == [True]  # the default pipeline, so a model that cannot load fails early
    default = trials.pipeline().settings
    ema = trials.run({"prompt_mode": "dual", "w": 1.5})
    raw = trials.run({"prompt_mode": "dual", "w": 1.5, "use_ema": False})
    again = trials.run({"prompt_mode": "dual", "w": 1.5, "use_ema": False})
    assert loaded == [True, False]
    assert trials.pipelines[True].unet is not trials.pipelines[False].unet
    # Unset settings are the checkpoint's (its val_steps: 2, its seed).
    assert ema.params == {"prompt_mode": "dual", "w": 1.5, "steps": 2, "seed": default.seed}
    assert raw.metrics == again.metrics  # seeded: the same samples
    assert set(ema.metrics) == {"psnr", "ssim", "mae"}


@pytest.mark.slow
def test_inference_compile_compiles_each_pipeline_once_and_scores_the_same(
    tiny_checkpoint, monkeypatch
):
    calls = compile_on_eager_backend(monkeypatch)
    spec = load_spec(SPEC)
    scores = {}
    for compile_ in (False, True):
        settings = {"split": "val", "compile": compile_}
        trials = inference.InferenceTrials(replace(spec, inference=settings), tiny_checkpoint)
        trials.prepare()
        first = trials.run({"prompt_mode": "dual", "w": 1.5})
        trials.run({"prompt_mode": "none"})
        scores[compile_] = first.metrics
    assert len(calls) == 1 and calls[0][0] is trials.pipeline()  # once, the one sampling
    assert scores[True].keys() == scores[False].keys()
    for name, value in scores[False].items():
        assert scores[True][name] == pytest.approx(value, abs=1e-3), name


def test_inference_compile_must_be_a_boolean(tiny_checkpoint):
    spec = replace(load_spec(SPEC), inference={"compile": "yes"})
    with pytest.raises(ConfigError, match="inference.compile must be true or false"):
        inference.InferenceTrials(spec, tiny_checkpoint)
