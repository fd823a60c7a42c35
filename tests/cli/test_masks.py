"""``python -m dcgd masks``: the test set's masks as PNG files other tools can be scored on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dcgd.cli import main
from dcgd.data.buckets import PAPER_BUCKETS
from dcgd.data.datamodule import InpaintingDataModule


def read_png(path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "L"
    return np.asarray(image)


def test_written_masks_are_the_data_modules_test_masks(tmp_path, capsys):
    settings = dict(size=32, seed=5, mask_kind="strokes", mask_dilation=1)
    out = tmp_path / "masks"
    argv = ["masks", "--out", str(out), "--count", "4", "--size", "32", "--bucket", "0.2-0.3"]
    assert main(argv + ["--seed", "5", "--kind", "strokes", "--dilation", "1"]) == 0
    assert "wrote 4 masks of bucket 0.2-0.3" in capsys.readouterr().out
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"{k:06d}.png" for k in range(4)]
    written = [read_png(f) for f in files]
    assert all(set(np.unique(m)) == {0, 255} for m in written)  # white = remove

    # Test sample k * 4 + 2 is mask k of bucket 0.2-0.3 (always, with hole pairs only; with
    # paste pairs, whenever that sample is a hole pair).
    for paste in (0.0, 0.5):
        dm = InpaintingDataModule(paste_probability=paste, test_per_bucket=4, **settings)
        dataset = dm.dataset("test")
        holes = 0
        for k in range(4):
            sample = dataset[k * len(PAPER_BUCKETS) + 2]
            if sample["kind"] == "hole":
                holes += 1
                assert np.array_equal(sample["mask"][0].numpy() * 255, written[k]), (paste, k)
        assert holes == 4 if paste == 0.0 else holes >= 1

    meta = json.loads((out / "masks.json").read_text())
    assert meta["bucket"] == "0.2-0.3" and meta["seed"] == 5 and meta["dilation"] == 1
    assert 0.2 <= meta["mean_ratio"] < 0.3


def test_all_buckets_and_overwrite(tmp_path, capsys):
    out = tmp_path / "all"
    argv = ["masks", "--out", str(out), "--count", "3", "--size", "32", "--bucket", "all"]
    assert main(argv) == 0
    for bucket in PAPER_BUCKETS:
        for path in (out / bucket.name).glob("*.png"):
            ratio = (read_png(path) > 0).mean()
            assert float(bucket.lo) <= ratio < float(bucket.hi)
    # A second run refuses to mix its masks with the old ones, unless told to replace them.
    assert main(argv) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main([*argv[:4], "2", *argv[5:], "--overwrite"]) == 0
    assert len(list((out / "0.01-0.1").glob("*.png"))) == 2  # the third mask is gone


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bucket", "0.3-0.1"], "bad bucket '0.3-0.1'"),
        (["--bucket", "0.1-0.2", "--count", "0"], "--count must be at least 1"),
        (["--bucket", "0.1-0.2", "--size", "8"], "--size must be from 16 to 8192"),
        (["--bucket", "0.1-0.2", "--dilation", "-2"], "--dilation must be from 0 to 32"),
        (["--bucket", "0.01-0.011", "--size", "16"], "holds no mask of 16x16"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    argv = ["masks", "--out", str(tmp_path / "m"), "--count", "2", "--size", "32"]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


def test_runs_as_a_program(tmp_path):
    out = tmp_path / "m"
    done = subprocess.run(
        [sys.executable, "-m", "dcgd", "masks", "--out", str(out), "--count", "2"]
        + ["--size", "32", "--bucket", "0.1-0.2", "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("*.png"))) == 2
