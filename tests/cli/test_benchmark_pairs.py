"""``python -m dcgd benchmark removal --pairs DIR``: the benchmark on real removal pairs, read
as ``dataset: pairs`` reads them, scored without a reappearance judge."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcgd.cli import main
from dcgd.cli.benchmark import BASELINES, PAIRS_OUTPUTS
from dcgd.method.guidance import PROMPT_MODES
from tests.cli.test_benchmark import _error_line
from tests.data.conftest import write_image
from tests.training.tiny import fit_tiny_checkpoint

H, W = 64, 80  # the tiny model works at 32 px: an exact 2x area downscale, then x 4..36


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return fit_tiny_checkpoint(tmp_path_factory.mktemp("benchmark-pairs-ckpt"))


def make_pairs(root: Path, count: int = 3) -> dict[str, tuple[np.ndarray, ...]]:
    """Target = a gradient, source = the target with a solid object under the mask; all in
    2x2 blocks, so that the reader's 2x downscale is exact. Returns the images at 32 px
    (block values, centre crop) by pair name, computed here without the reader."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0 : H // 2, 0 : W // 2]
    small = {}
    for i in range(count):
        base = rng.integers(40, 160, 3)
        target = np.clip(base + 2 * yy[..., None] - 1.5 * xx[..., None], 0, 255).astype(np.uint8)
        mask = np.zeros((H // 2, W // 2), np.uint8)
        y, x = 6 + 2 * i, 10 + 3 * i
        mask[y : y + 8 + 2 * i, x : x + 9] = 1
        source = target.copy()
        source[mask > 0] = rng.integers(0, 256, 3).astype(np.uint8)
        name = f"scene{i}" if i % 2 else f"sub/scene{i}"
        big = [a.repeat(2, axis=0).repeat(2, axis=1) for a in (source, mask, target)]
        write_image(root / "source" / f"{name}.png", big[0])
        write_image(root / "mask" / f"{name}.png", big[1] * 255)
        write_image(root / "target" / f"{name}.png", big[2])
        small[name] = tuple(a[:, 4:36] for a in (source, mask, target))
    return small


def _benchmark(checkpoint, out, *extra):
    return main(
        ["benchmark", "removal", "--checkpoint", str(checkpoint), "--out", str(out),
         "--w", "1.5", "--steps", "2", "--batch-size", "2", "--no-mlflow", *extra]
    )  # fmt: skip


def test_pairs_are_read_and_scored_without_a_judge(checkpoint, workdir, capsys):
    small = make_pairs(workdir / "pairs")
    (workdir / "prompts.csv").write_text("name,t_info,t_mask\nscene1.png,a gradient,a square\n")
    out = workdir / "out"
    extra = ["--pairs", str(workdir / "pairs"), "--count", "5", "--prompts", "prompts.csv"]
    assert _benchmark(checkpoint, out, *extra) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(PAIRS_OUTPUTS)
    result = json.loads((out / "results.json").read_text())
    methods = ["none", *(f"{m}_w1.5" for m in PROMPT_MODES[1:]), *BASELINES]
    assert list(result["methods"]) == methods
    assert list(result["differences"]) == [f"{m}_w1.5 - none" for m in PROMPT_MODES[1:]]
    settings = result["settings"]
    assert settings["size"] == 32 and settings["count"] == 3  # --count 5: all 3 pairs
    assert settings["benchmark"] == "removal-pairs" and settings["skipped_pairs"] == []
    assert "not measured" in settings["reappearance"]
    assert "not measured" in result["protocol"]["reappeared"]
    assert "judge" not in result["protocol"]
    for stat in result["methods"].values():
        assert "reappeared" not in stat and "reappeared_by_size" not in stat
        assert 0.0 <= stat["hole_mae"]["mean"] <= 1.0
        for measure in ("hole_mae", "hole_psnr", "ssim"):
            assert stat[measure]["lo"] <= stat[measure]["mean"] <= stat[measure]["hi"]
    for diff in result["differences"].values():
        assert "reappeared" not in diff and "hole_mae" in diff

    # The cases are the pairs in name order, at 32 px, with --prompts matched by name.
    cases = result["cases"]
    assert [c["id"] for c in cases] == sorted(small)
    assert [(c["t_info"], c["t_mask"]) for c in cases] == [
        ("a gradient", "a square"), ("", ""), ("", "")
    ]  # fmt: skip
    # mean_fill's hole MAE, by hand on the same pairs at the working size.
    by_hand = []
    for case in cases:
        source, mask, target = (a.astype(np.float64) for a in small[case["id"]])
        assert case["mask_ratio"] == pytest.approx(mask.mean())
        hole = mask > 0
        mean = source[~hole].mean(axis=0)  # mean colour of the known pixels
        mae = float(np.abs(mean - target[hole]).mean() / 255)
        assert case["results"]["mean_fill"]["hole_mae"] == pytest.approx(mae, abs=1e-6)
        assert "reappeared" not in case["results"]["mean_fill"]
        by_hand.append(mae)
    assert result["methods"]["mean_fill"]["hole_mae"]["mean"] == pytest.approx(np.mean(by_hand))

    table = (out / "table.md").read_text()
    assert "Removal on real pairs" in table and "reappearance not measured" in table
    assert "reappeared %" not in table and "Paired differences" in table
    for name in methods:
        assert f"| {name} |" in table
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [r["name"] for r in rows if r["kind"] != "difference"] == methods
    assert not any(k.startswith("reappeared") for k in rows[0])
    grid = Image.open(out / "grid.png")
    # source, mask, 7 methods, target; the first batch's 2 pairs; scaled 4x to 128 px tiles
    assert grid.width >= 4 * 10 * 32 and 4 * 2 * 32 <= grid.height < 4 * 3 * 32
    assert Image.open(out / "hole_mae.png").size[0] > 300
    assert "reappearance not measured" in capsys.readouterr().out


def test_split_layout_and_a_bad_folder(checkpoint, workdir, capsys):
    make_pairs(workdir / "split" / "test", count=2)
    out = workdir / "split-out"
    assert _benchmark(checkpoint, out, "--pairs", str(workdir / "split"), "--count", "1") == 0
    result = json.loads((out / "results.json").read_text())
    assert [c["id"] for c in result["cases"]] == ["scene1"]  # the first in name order
    assert result["settings"]["pairs"].endswith("test")

    (workdir / "empty").mkdir()
    capsys.readouterr()
    assert _benchmark(checkpoint, workdir / "o1", "--pairs", str(workdir / "empty")) == 2
    assert "needs source/, mask/ and target/" in _error_line(capsys)
    assert _benchmark(checkpoint, workdir / "o2", "--prompts", "p.csv") == 2
    assert "give --pairs DIR" in _error_line(capsys)
    assert _benchmark(
        checkpoint, workdir / "o3", "--pairs", str(workdir / "split"), "--prompts", "p.csv"
    ) == 2  # fmt: skip
    assert "p.csv does not exist" in _error_line(capsys)
