"""``notebooks/compare_runs.ipynb`` runs top to bottom on a small MLflow store made here."""

from __future__ import annotations

import json
import sys

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from dcgd.cli import main
from tests.sweeps.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "compare_runs.ipynb"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec for THIS interpreter (the one dcgd is installed in), found through
    JUPYTER_PATH, so the notebook never runs on some other ``python`` on the PATH."""
    folder = tmp_path / "jupyter" / "kernels" / "dcgd-test"
    folder.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dcgd test",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "dcgd-test"


@pytest.mark.slow
def test_compare_notebook_executes_on_a_small_store(workdir, kernel, monkeypatch):
    spec = {
        "study": "nb",
        "kind": "function",
        "sampler": "grid",
        "search_space": {"prompt_mode": ["none", "positive", "negative", "dual"], "w": [1.0, 2.0]},
        "objective": {"metric": "psnr", "bucket": "0.3-0.4", "direction": "maximize"},
        "function": {"target": "tests.sweeps.toy:ablation"},
        "tracking": {"experiment": "nb-exp"},
    }
    (workdir / "nb.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", "--config", str(workdir / "nb.yaml")]) == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    monkeypatch.setenv("DCGD_EXPERIMENT", "nb-exp")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(
        o.get("text", "") + o.get("data", {}).get("text/markdown", "")
        + o.get("data", {}).get("text/plain", "")
        for o in outputs
    )  # fmt: skip
    assert "study 'nb'" in text and "8 completed trials" in text
    for mode in ("none", "positive", "negative", "dual"):
        assert f"| {mode} |" in text  # the table, one row per prompt mode
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # 4 plots for psnr/mae (2 kinds) + the best trial's grid
    assert "best trial" in text and "logged no image grid" not in text
