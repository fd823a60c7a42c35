"""``TableOneCallback``: Table 1 from ``trainer.test``, with baselines, per-image scores and
grids, logged to MLflow; end to end through ``python -m dcgd fit`` / ``test``."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader

from dcgd.cli import main
from dcgd.data.datamodule import InpaintingDataModule
from dcgd.errors import DCGDError
from dcgd.eval.baselines import telea
from dcgd.eval.table_callback import TableOneCallback
from dcgd.method.input import composite
from tests.eval.helpers import table_trainer

QUICKSTART = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")


class Blur(L.LightningModule):
    """A real (if simple) method under test: fills the hole with a blurred source."""

    def __init__(self, output: str = "result") -> None:
        super().__init__()
        self.output = output
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def test_step(self, batch, batch_idx):
        blurred = torch.nn.functional.avg_pool2d(batch["source"], 9, 1, 4, count_include_pad=False)
        return {self.output: blurred} if self.output else None


def _numpy_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    a, b = (pred.double().numpy() + 1) / 2, (target.double().numpy() + 1) / 2
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def _datamodule(size: int = 32, per_bucket: int = 2) -> InpaintingDataModule:
    return InpaintingDataModule(
        dataset="procedural", size=size, batch_size=3, test_per_bucket=per_bucket
    )


def test_table_without_mlflow_lands_in_the_run_directory(tmp_path):
    callback = TableOneCallback(baselines=["opencv_telea"], lpips=[], removal=["residue"])
    datamodule = _datamodule()
    table_trainer(callback, tmp_path).test(Blur(), datamodule=datamodule)
    out = tmp_path / "eval"
    assert {p.name for p in out.iterdir()} >= {"table1.md", "table1.csv", "per_image.csv"}
    assert (out / "grids" / "test.png").is_file()
    rows = list(csv.DictReader(io.StringIO((out / "per_image.csv").read_text())))
    assert len(rows) == 2 * 8  # two columns x 4 buckets x 2 images
    # The baseline's per-image PSNR, recomputed independently from the same test set.
    dataset = datamodule.dataset("test")
    for row in (r for r in rows if r["method"] == "opencv_telea"):
        sample = next(dataset[i] for i in range(len(dataset)) if dataset[i]["id"] == row["id"])
        source, mask = sample["source"][None], sample["mask"][None]
        result = composite(telea().inpaint(source, mask), source, mask)
        assert float(row["psnr"]) == pytest.approx(_numpy_psnr(result, sample["target"]), abs=1e-4)
        assert row["kind"] == sample["kind"]
        assert (row["kind"] == "hole") == (row["residue"] == "nan")
    # Table means are the means of the per-image rows.
    table = list(csv.DictReader(io.StringIO((out / "table1.csv").read_text())))
    for line in table:
        for column in ("model", "opencv_telea"):
            values = [
                float(r[line["metric"]])
                for r in rows
                if r["method"] == column and line["bucket"] in (r["bucket"], "all")
            ]
            values = [v for v in values if not math.isnan(v)]
            assert float(line[column]) == pytest.approx(np.mean(values), abs=1e-9)
    assert callback.results["model"]["psnr"]["all"] == pytest.approx(
        float(next(r["model"] for r in table if r["metric"] == "psnr" and r["bucket"] == "all"))
    )


def test_clip_at_n_column_with_a_saved_clip(tmp_path):
    from dcgd.describe.clip_model import load_clip, save_clip, tiny_clip_config

    config = tiny_clip_config()
    save_clip(load_clip(model_cfg=config).model, config, tmp_path / "clip")  # random: wiring
    callback = TableOneCallback(
        baselines=[],
        lpips=[],
        removal=["clip"],
        clip_model=str(tmp_path / "clip"),
        clip_vocabulary="procedural_objects.txt",
        clip_scene_vocabulary="procedural_scenes.txt",
        clip_templates="procedural_templates.txt",
        clip_top_n=[1, 3],
    )
    table_trainer(callback, tmp_path).test(Blur(), datamodule=_datamodule(per_bucket=1))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "eval" / "per_image.csv").read_text())))
    assert len(rows) == 4 and {r["kind"] for r in rows} == {"hole", "paste"}
    for row in rows:  # defined on paste pairs only, and a success rate
        values = {row["clip@1"], row["clip@3"]}
        assert values == {"nan"} if row["kind"] == "hole" else values <= {"0.0", "1.0"}
    assert "clip@1: CLIP@N (inst-inpaint)" in (tmp_path / "eval" / "protocol.txt").read_text()


def test_a_test_step_without_result_is_a_clear_error(tmp_path):
    callback = TableOneCallback(baselines=[], lpips=[], removal=[])
    with pytest.raises(DCGDError, match=r"test_step to return \{'result'"):
        table_trainer(callback, tmp_path).test(
            Blur(output=""), datamodule=_datamodule(per_bucket=1)
        )


def test_a_padding_sampler_does_not_count_images_twice(tmp_path):
    """Two passes over the same loader stand in for the repeats a DistributedSampler pads with."""
    datamodule = _datamodule(per_bucket=1)
    loader = datamodule.test_dataloader()
    twice = DataLoader(
        torch.utils.data.ConcatDataset([loader.dataset, loader.dataset]), batch_size=3
    )
    callback = TableOneCallback(baselines=[], lpips=[], removal=[])
    with pytest.warns(UserWarning, match="scored twice"):
        table_trainer(callback, tmp_path).test(Blur(), dataloaders=twice)
    rows = (tmp_path / "eval" / "per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    assert "| psnr ↑ | all | 4 |" in (tmp_path / "eval" / "table1.md").read_text()


def test_with_two_callbacks_only_the_first_one_runs(tmp_path):
    first, last = (
        TableOneCallback(baselines=[], lpips=[], removal=[], output_dir=str(tmp_path / name))
        for name in ("first", "last")
    )
    trainer = table_trainer(first, tmp_path)
    trainer.callbacks.append(last)
    with pytest.warns(UserWarning, match="only the first one runs"):
        trainer.test(Blur(), datamodule=_datamodule(per_bucket=1))
    assert (tmp_path / "first" / "table1.md").is_file()
    assert not (tmp_path / "last").exists()


@pytest.mark.slow  # a real fit + test through the CLI: ~1 min of CPU
def test_fit_then_test_logs_table_one_to_mlflow(workdir):
    common = [
        "--config", QUICKSTART,
        "--data.init_args.size", "32",
        "--data.init_args.test_per_bucket", "2",
        "--model.init_args.val_steps", "2",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.limit_val_batches", "0",
    ]  # fmt: skip
    assert main(["fit", *common, "--trainer.max_steps", "2"]) == 0
    ckpt = workdir / "runs" / "quickstart" / "checkpoints" / "last.ckpt"
    callback = "--trainer.callbacks+=dcgd.eval.table_callback.TableOneCallback"
    assert main(["test", *common, "--ckpt_path", str(ckpt), callback]) == 0

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["dcgd-quickstart"], output_format="list")
    assert len(runs) == 1  # the test continued the checkpoint's run
    run = runs[0]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    expected = {"eval/table1.md", "eval/table1.csv", "eval/per_image.csv", "eval/grids"}
    assert expected <= listed
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "eval/grids")]
    assert grids == ["eval/grids/test.png"]

    local = Path(run.info.artifact_uri.removeprefix("file://"))
    markdown = (local / "eval" / "table1.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| metric"))
    assert header == "| metric | bucket | n | dcgd_dual | opencv_telea | opencv_ns | dcgd_none |"
    lines = markdown.splitlines()
    for metric in ("psnr ↑", "ssim ↑", "mae ↓"):
        for bucket in ("0.01-0.1", "0.1-0.2", "0.2-0.3", "0.3-0.4", "all"):
            assert any(line.startswith(f"| {metric} | {bucket} | 2 |") for line in lines) or (
                bucket == "all"
                and any(line.startswith(f"| {metric} | all | 8 |") for line in lines)
            )
    assert any(line.startswith("| residue ↓ | all |") for line in lines)  # paste pairs only
    # Offline: LPIPS and CLIP@N are left out and the table says why, never a made-up number.
    assert "lpips_alex (left out)" in markdown and "| lpips" not in markdown
    rows = list(csv.DictReader(io.StringIO((local / "eval" / "per_image.csv").read_text())))
    assert len(rows) == 4 * 8
    assert {r["method"] for r in rows} == {"dcgd_dual", "opencv_telea", "opencv_ns", "dcgd_none"}
    metrics = run.data.metrics
    psnr_rows = [float(r["psnr"]) for r in rows if r["method"] == "dcgd_dual"]
    assert metrics["test/dcgd_dual/psnr/all"] == pytest.approx(np.mean(psnr_rows), rel=1e-6)
    assert metrics["test/psnr"] == pytest.approx(np.mean(psnr_rows), rel=1e-6)
    assert "test/opencv_ns/residue/all" in metrics
