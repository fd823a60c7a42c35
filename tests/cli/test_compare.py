"""``python -m dcgd compare``: tables and plots from the MLflow runs a sweep left.

The store is made by a real (cheap) sweep: the toy ``ablation`` objective, whose metrics
depend on prompt_mode and w in a known way (dual at w = 2 is best), through the runner.
"""

from __future__ import annotations

import csv
import io

import pytest
import yaml
from PIL import Image

from dcgd.cli import main

MODES = ["none", "positive", "negative", "dual"]


def _sweep(workdir, study: str, modes=MODES, ws=(1.0, 2.0, 3.0), experiment="cmp") -> None:
    spec = {
        "study": study,
        "kind": "function",
        "sampler": "grid",
        "search_space": {"prompt_mode": list(modes), "w": list(ws)},
        "objective": {"metric": "psnr", "bucket": "0.3-0.4", "direction": "maximize"},
        "function": {"target": "tests.sweeps.toy:ablation"},
        "tracking": {"experiment": experiment},
    }
    path = workdir / f"{study}.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", "--config", str(path)]) == 0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two studies in one experiment: "first" (2 trials), then "second" (12 trials)."""
    workdir = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        _sweep(workdir, "first", modes=["none", "dual"], ws=[2.0])
        _sweep(workdir, "second")
    return workdir


@pytest.fixture(autouse=True)
def _in_store(store, monkeypatch, capsys):
    monkeypatch.chdir(store)  # compare reads the default store, ./mlflow.db
    capsys.readouterr()


def _csv(capsys) -> list[dict]:
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def test_default_is_the_latest_study_and_the_best_is_marked(store, capsys):
    assert main(["compare", "--experiment", "cmp", "--format", "csv"]) == 0
    rows = _csv(capsys)
    trials, best = rows[:-1], rows[-1]
    assert len(trials) == 12  # the second study, not the first (2 trials)
    [top] = [r for r in trials if r["prompt_mode"] == "dual" and float(r["w"]) == 2.0]
    assert best["psnr/0.3-0.4"] == top["trial"]  # higher PSNR is better
    assert best["mae/all"] == top["trial"]  # lower MAE is better
    assert best["objective"] == top["trial"]  # the study maximised


def test_parent_by_name_and_rows_per_prompt_mode(store, capsys):
    argv = ["compare", "--experiment", "cmp", "--format", "csv", "--parent", "first"]
    assert main(argv) == 0
    assert len(_csv(capsys)) - 1 == 2
    assert main(["compare", "--experiment", "cmp", "--format", "csv", "--rows", "prompt_mode"]) == 0
    rows = _csv(capsys)[:-1]
    assert [r["prompt_mode"] for r in rows] == MODES
    assert all(float(r["w"]) == 2.0 for r in rows)  # each mode's best trial is at w = 2


def test_markdown_table_bolds_the_best_and_plots_are_written(store, capsys):
    plots = store / "plots"
    argv = ["compare", "--experiment", "cmp", "--rows", "prompt_mode", "--metrics", "psnr"]
    assert main([*argv, "--plot", str(plots)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| prompt_mode | trial | w | psnr/0.01-0.1 ↑")
    assert "mae" not in lines[0]
    dual = next(line for line in lines if line.startswith("| dual "))
    none = next(line for line in lines if line.startswith("| none "))
    assert "**" in dual and "**" not in none
    for name in ("psnr_vs_w.png", "psnr_per_bucket.png", "mae_vs_w.png", "mae_per_bucket.png"):
        with Image.open(plots / name) as image:
            assert image.width > 100


def test_unknown_experiment_parent_and_rows_are_one_line_errors(store, capsys):
    assert main(["compare", "--experiment", "nope"]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err
    assert main(["compare", "--experiment", "cmp", "--parent", "third"]) == 2
    assert "--parent third: no such study run" in capsys.readouterr().err
    assert main(["compare", "--experiment", "cmp", "--rows", "layout"]) == 2
    assert "no parameter 'layout'" in capsys.readouterr().err


def test_without_experiment_the_most_recent_sweep_is_used_and_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a store of its own: three sweeps, started in this order
    _sweep(tmp_path, "a", modes=["none"], ws=[1.0], experiment="older")
    _sweep(tmp_path, "b", modes=["none", "dual"], ws=[1.0], experiment="newer")
    capsys.readouterr()
    assert main(["compare", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "using 'newer', the experiment of the most recent sweep" in err
    assert len(list(csv.DictReader(io.StringIO(out)))) - 1 == 2  # study b's two trials
    _sweep(tmp_path, "c", modes=MODES, ws=[1.0], experiment="older")  # older gets the latest
    capsys.readouterr()
    assert main(["compare", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "using 'older'" in err
    assert len(list(csv.DictReader(io.StringIO(out)))) - 1 == 4  # study c, not a


def test_without_experiment_and_without_any_sweep_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compare"]) == 2
    assert "no sweep in sqlite:///" in capsys.readouterr().err
