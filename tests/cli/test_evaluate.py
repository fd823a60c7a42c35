"""``python -m dcgd evaluate``: a folder of 50 predictions (OpenCV Telea on procedural scenes
and photo crops) scored per bucket, and every problem reported rather than guessed."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcgd.cli import main
from dcgd.data.buckets import BUCKET_NAMES, PAPER_BUCKETS
from dcgd.data.images import random_crop
from dcgd.data.masks import MaskSettings, eval_mask
from dcgd.data.pairs import paste_pair
from dcgd.data.photos import load_photo
from dcgd.data.procedural import render_object, render_scene
from dcgd.eval.baselines import telea
from tests.eval.helpers import save_backbones

SIZE = 64
COUNT = 50


def _telea(source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    x = torch.from_numpy(source).permute(2, 0, 1)[None].float() / 127.5 - 1
    m = torch.from_numpy(mask)[None, None].float()
    out = telea().inpaint(x, m)[0].permute(1, 2, 0).numpy()
    return np.clip(np.rint((out + 1) * 127.5), 0, 255).astype(np.uint8)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """50 (target, mask, source, prediction) files: 25 procedural scenes under scenes/, 25
    crops of the built-in photographs under photos/; masks cycle through the four buckets.
    Predictions are PNG, targets BMP: files are matched by name without the extension."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    photos = ["astronaut", "chelsea", "coffee", "rocket", "china"]
    for i in range(COUNT):
        if i < COUNT // 2:
            name, target = f"scenes/{i:03d}", render_scene(rng, SIZE).image
        else:
            name, target = f"photos/{i:03d}", random_crop(load_photo(photos[i % 5]), SIZE, rng)
        mask = eval_mask(i, 0, (SIZE, SIZE), PAPER_BUCKETS[i % 4], MaskSettings())
        source = target * (1 - mask[..., None])
        _write(root / "target" / f"{name}.bmp", target)
        _write(root / "mask" / f"{name}.png", mask * 255)
        _write(root / "source" / f"{name}.png", source)
        _write(root / "pred" / f"{name}.png", _telea(source, mask))
    save_backbones(root / "lpips", nets=("alex",))  # seeded random: wiring only, not LPIPS
    return {k: root / k for k in ("target", "mask", "source", "pred", "lpips")}


def _argv(folders: dict[str, Path], *extra: str) -> list[str]:
    names = ("pred", "target", "mask", "source")
    return ["evaluate", *[f"--{k}={folders[k]}" for k in names if k in folders], *extra]


def _unit(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def test_fifty_predictions_give_the_table_and_the_json(folders, tmp_path, capsys):
    report, per_image = tmp_path / "report.json", tmp_path / "scores.csv"
    extra = [f"--json={report}", f"--csv={per_image}", "--lpips=alex"]
    assert main(_argv(folders, *extra, f"--lpips-weights={folders['lpips']}")) == 0
    printed = capsys.readouterr().out
    assert "| metric | bucket | n | pred |" in printed
    for bucket in (*BUCKET_NAMES, "all"):
        assert f"| psnr ↑ | {bucket} |" in printed
        assert f"| lpips_alex ↓ | {bucket} |" in printed
    assert "ssim: Gaussian window 11, sigma 1.5" in printed  # the protocol under the table
    assert f"scored {COUNT} of {COUNT} images" in printed

    payload = json.loads(report.read_text())
    assert {"psnr", "ssim", "mae", "lpips_alex"} <= set(payload)
    assert payload["counts"] == {"0.01-0.1": 13, "0.1-0.2": 13, "0.2-0.3": 12, "0.3-0.4": 12,
                                 "all": 50, "outside": 0}  # fmt: skip
    assert all(n == 0 for n in payload["problem_counts"].values())
    # Per-bucket and overall means, recomputed independently from the files with numpy.
    psnr: dict[str, list[float]] = {b: [] for b in BUCKET_NAMES}
    mae: dict[str, list[float]] = {b: [] for b in BUCKET_NAMES}
    for path in sorted(folders["pred"].rglob("*.png")):
        key = path.relative_to(folders["pred"]).with_suffix("")
        pred, target = _unit(path), _unit(folders["target"] / key.with_suffix(".bmp"))
        mask = _unit(folders["mask"] / key.with_suffix(".png"))[..., :1] > 0.5
        source = _unit(folders["source"] / key.with_suffix(".png"))
        result = np.where(mask, pred, source)
        bucket = BUCKET_NAMES[int(key.name) % 4]
        psnr[bucket].append(10 * np.log10(1 / np.mean((result - target) ** 2)))
        mae[bucket].append(np.mean(np.abs(result - target)))
    # float32 scores against numpy's float64: ~3e-6 dB apart, the order of the float32 sums
    # (threads, vector width) moves them by ~1e-6.
    for bucket in BUCKET_NAMES:
        assert payload["psnr"][bucket] == pytest.approx(np.mean(psnr[bucket]), abs=1e-4)
        assert payload["mae"][bucket] == pytest.approx(np.mean(mae[bucket]), abs=1e-5)
    every = [v for values in psnr.values() for v in values]
    assert payload["psnr"]["all"] == pytest.approx(np.mean(every), abs=1e-4)
    # Bigger holes are harder: the table shows it.
    assert payload["psnr"]["0.01-0.1"] > payload["psnr"]["0.3-0.4"]
    rows = list(csv.DictReader(io.StringIO(per_image.read_text())))
    assert len(rows) == COUNT and {r["id"][:6] for r in rows} == {"scenes", "photos"}


def test_problems_are_reported_not_guessed(folders, tmp_path, capsys):
    broken = {k: tmp_path / k for k in ("pred", "target", "mask")}
    for k, folder in broken.items():
        shutil.copytree(folders[k], folder)
    (broken["pred"] / "scenes/000.png").unlink()  # missing prediction
    (broken["mask"] / "scenes/001.png").unlink()  # missing mask
    _write(broken["pred"] / "extra/999.png", np.zeros((SIZE, SIZE, 3), np.uint8))  # no target
    small = Image.open(broken["pred"] / "scenes/002.png").resize((32, 32))
    small.save(broken["pred"] / "scenes/002.png")  # size mismatch
    half = np.zeros((SIZE, SIZE), np.uint8)
    half[: SIZE // 2] = 255
    _write(broken["mask"] / "scenes/003.png", half)  # ratio 0.5: outside every bucket
    (broken["target"] / "scenes/004.bmp").write_bytes(b"not an image")  # unreadable
    shutil.copy(broken["pred"] / "scenes/005.png", broken["pred"] / "scenes/005.jpg")  # ambiguous
    report = tmp_path / "report.json"
    # Scoring part of the images is an error unless asked for; then they are listed.
    assert main(_argv(broken, f"--json={report}", "--lpips=none")) == 2
    # (the files missing or named twice are known before scoring: it stops there)
    assert "4 of 51 images were skipped" in capsys.readouterr().err
    assert not report.exists()
    assert main(_argv(broken, f"--json={report}", "--lpips=none", "--allow-missing")) == 0
    printed = capsys.readouterr().out
    payload = json.loads(report.read_text())
    problems = payload["problems"]
    assert list(problems["missing_pred"]) == ["scenes/000"]
    assert list(problems["missing_mask"]) == ["scenes/001"]
    assert list(problems["missing_target"]) == ["extra/999"]
    assert problems["size_mismatch"] == {"scenes/002": "pred 32x32, target 64x64, mask 64x64"}
    assert problems["outside_buckets"] == {"scenes/003": 0.5}
    assert "cannot decode image" in problems["unreadable"]["scenes/004"]
    assert sorted(Path(p).name for p in problems["ambiguous"]["scenes/005"]) == [
        "005.jpg",
        "005.png",
    ]
    assert payload["counts"]["all"] == COUNT - 6 and payload["counts"]["outside"] == 1
    assert "no --source given" in printed and "size mismatch: 1" in printed
    assert "lpips_alex" not in payload


def test_missing_lpips_weights_and_unusable_inputs_are_clear(folders, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert main(_argv(folders, f"--json={report}", "--lpips=alex", "--lpips-weights=/nowhere")) == 0
    payload = json.loads(report.read_text())
    assert "lpips_alex" not in payload  # left out, never a random-backbone number
    assert "downloads are off" in payload["protocol"]["lpips_alex (left out)"]
    assert main(["evaluate", "--pred=/nowhere", f"--target={folders['target']}",
                 f"--mask={folders['mask']}"]) == 2  # fmt: skip
    assert "/nowhere is not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", f"--pred={empty}", f"--target={folders['target']}",
                 f"--mask={folders['mask']}"]) == 2  # fmt: skip
    assert "no image could be scored" in capsys.readouterr().err
    assert (
        main(_argv({k: folders[k] for k in ("pred", "target", "mask")}, "--removal=residue")) == 2
    )
    assert "give --source" in capsys.readouterr().err


def test_removal_residue_scores_what_the_source_showed(tmp_path, capsys):
    """Paste pairs: a method that returns the source unchanged leaves the object: residue 1."""
    rng = np.random.default_rng(3)
    for i in range(4):
        scene = render_scene(rng, SIZE)
        pair = None
        while pair is None:
            pair = paste_pair(scene.image, render_object("red circle", 96, rng), rng, "red circle")
        _write(tmp_path / "target" / f"{i}.png", pair.target)
        _write(tmp_path / "mask" / f"{i}.png", pair.mask * 255)
        _write(tmp_path / "source" / f"{i}.png", pair.source)
        _write(tmp_path / "pred" / f"{i}.png", pair.source)
    report = tmp_path / "report.json"
    folders = {k: tmp_path / k for k in ("pred", "target", "mask", "source")}
    assert main(_argv(folders, "--removal=residue", "--lpips=none", f"--json={report}")) == 0
    assert json.loads(report.read_text())["residue"]["all"] == pytest.approx(1.0)


def test_pairs_folder_scores_real_removals(tmp_path, capsys):
    """``--pairs DIR``: source/ mask/ target/ of RORD-style pairs. A method that removed the
    object (pred = target) on half of the images and did nothing (pred = source) on the
    other half gets exactly the per-image MAE / PSNR computed directly from the files."""
    from tests.data.test_paired import make_pairs

    scenes = make_pairs(tmp_path / "pairs")
    expected = {}
    for i, (name, (source, mask, target)) in enumerate(sorted(scenes.items())):
        pred = target if i % 2 else source
        _write(tmp_path / "pred" / f"{name}.png", pred)
        result = np.where(mask[..., None] > 0, pred, source) / 255.0
        err = result - target / 255.0
        mse = np.mean(err**2)
        expected[name] = (np.mean(np.abs(err)), 10 * np.log10(1 / mse) if mse else np.inf)
    per_image = tmp_path / "scores.csv"
    argv = ["evaluate", f"--pred={tmp_path / 'pred'}", f"--pairs={tmp_path / 'pairs'}"]
    assert main([*argv, "--lpips=none", f"--csv={per_image}"]) == 0
    assert f"scored {len(scenes)} of {len(scenes)} images" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(per_image.read_text())))
    assert sorted(r["id"] for r in rows) == sorted(scenes)
    for row in rows:
        mae, psnr = expected[row["id"]]
        assert float(row["mae"]) == pytest.approx(mae, abs=1e-6)
        assert float(row["psnr"]) == pytest.approx(psnr, abs=1e-4)
    assert sum(float(r["mae"]) == 0 for r in rows) == len(scenes) // 2  # the removed ones
    # --pairs sets the three folders itself; without it --target and --mask are needed.
    assert main([*argv, f"--mask={tmp_path / 'pairs' / 'mask'}"]) == 2
    assert "drop --mask" in capsys.readouterr().err
    assert main(["evaluate", f"--pred={tmp_path / 'pred'}"]) == 2
    assert "or --pairs DIR" in capsys.readouterr().err
    assert main([*argv[:2], f"--pairs={tmp_path / 'pred'}"]) == 2
    assert "needs source/, mask/ and target/" in capsys.readouterr().err
