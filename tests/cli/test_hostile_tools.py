"""Hostile inputs and faults for the tools: partial evaluations fail loudly, numbers are
checked where they enter (one line naming the option), and no command loses a file: results
are never overwritten without --overwrite, and files are written whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dcgd.cli import main
from dcgd.data.buckets import PAPER_BUCKETS
from dcgd.data.masks import eval_mask
from dcgd.errors import ConfigError, DataError

pytestmark = pytest.mark.timeout(120)

SIZE = 32


def _error_line(capsys) -> str:
    """The single ``error: ...`` line of stderr (a tqdm bar may share stderr)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    """Temporary files a writer left behind (names of dotfiles / *.tmp)."""
    return sorted(
        p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")
    )


# ------------------------------------------------------------------------------- evaluate
@pytest.fixture
def evalset(tmp_path) -> dict[str, Path]:
    """Four 32x32 (pred, target, mask) triples, one per paper bucket."""
    rng = np.random.default_rng(0)
    folders = {k: tmp_path / k for k in ("pred", "target", "mask")}
    for folder in folders.values():
        folder.mkdir()
    for k in range(4):
        target = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        noise = rng.integers(-20, 21, target.shape)
        pred = np.clip(target.astype(int) + noise, 0, 255).astype(np.uint8)
        mask = eval_mask(k, 0, (SIZE, SIZE), PAPER_BUCKETS[k])
        Image.fromarray(target).save(folders["target"] / f"{k:03d}.png")
        Image.fromarray(pred).save(folders["pred"] / f"{k:03d}.png")
        Image.fromarray(mask * 255).save(folders["mask"] / f"{k:03d}.png")
    return folders


def _evaluate(folders: dict[str, Path], *extra: str) -> int:
    argv = [f"--{k}={folders[k]}" for k in ("pred", "target", "mask")]
    return main(["evaluate", *argv, "--lpips=none", *extra])


def test_evaluate_fails_when_it_scored_fewer_images_than_it_was_given(evalset, tmp_path, capsys):
    (evalset["pred"] / "001.png").unlink()  # a missing prediction
    (evalset["mask"] / "002.png").unlink()  # a missing mask
    report = tmp_path / "report.json"
    assert _evaluate(evalset, f"--json={report}") == 2
    out = capsys.readouterr()
    error = [line for line in out.err.splitlines() if line.startswith("error: ")]
    assert len(error) == 1
    assert "2 of 4 images were skipped" in error[0] and "--allow-missing" in error[0]
    # What was skipped is listed, one line each.
    assert "missing pred: 1" in out.out and "  001: " in out.out
    assert "missing mask: 1" in out.out and "  002: " in out.out
    assert not report.exists()  # a partial score is not written as if it were the result

    # Told so, it scores what it can and says how much that was.
    assert _evaluate(evalset, f"--json={report}", "--allow-missing") == 0
    printed = capsys.readouterr().out
    assert "scored 2 of 4 images" in printed
    payload = json.loads(report.read_text())
    assert payload["counts"]["all"] == 2
    assert payload["problem_counts"]["missing_pred"] == 1


def test_evaluate_counts_a_mismatched_size_as_skipped(evalset, capsys):
    small = Image.open(evalset["pred"] / "003.png").resize((16, 16))
    small.save(evalset["pred"] / "003.png")
    assert _evaluate(evalset) == 2
    assert "1 of 4 images were skipped (size mismatch 1" in _error_line(capsys)
    assert _evaluate(evalset, "--allow-missing") == 0


def test_evaluate_with_every_image_scored_still_exits_zero(evalset, capsys):
    assert _evaluate(evalset) == 0
    assert "scored 4 of 4 images" in capsys.readouterr().out


def test_evaluate_never_overwrites_results_unless_told(evalset, tmp_path, capsys):
    outputs = {"json": tmp_path / "r.json", "csv": tmp_path / "r.csv", "table": tmp_path / "t.md"}
    flags = [f"--{k}={v}" for k, v in outputs.items()]
    outputs["json"].write_text("mine")
    assert _evaluate(evalset, *flags) == 2
    line = _error_line(capsys)
    assert "--json" in line and "exists" in line and "--overwrite" in line
    assert outputs["json"].read_text() == "mine"
    assert not outputs["csv"].exists() and not outputs["table"].exists()  # checked up front

    assert _evaluate(evalset, *flags, "--overwrite") == 0
    assert json.loads(outputs["json"].read_text())["counts"]["all"] == 4
    assert len(outputs["csv"].read_text().splitlines()) == 5  # a header and 4 images
    assert _leftovers(tmp_path) == []
    # The same file twice would keep only the last of them.
    same = tmp_path / "same.json"
    assert _evaluate(evalset, f"--json={same}", f"--csv={same}") == 2
    assert "same file" in _error_line(capsys)
    (tmp_path / "folder").mkdir()
    assert _evaluate(evalset, f"--table={tmp_path / 'folder'}") == 2
    assert "is a folder" in _error_line(capsys)


def test_evaluate_batch_size_is_checked(evalset, capsys):
    assert _evaluate(evalset, "--batch-size=0") == 2
    assert "--batch-size must be at least 1" in _error_line(capsys)


# ---------------------------------------------------------------------------------- masks
def _masks(out: Path, *extra: str) -> int:
    return main(["masks", "--out", str(out), "--count", "2", "--size", "32", *extra])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bucket", "0.1-0.2", "--count", "-3"], "--count must be at least 1, got -3"),
        (["--bucket", "0.1-0.2", "--size", "100000"], "--size must be from 16 to 8192"),
        (["--bucket", "0.1-0.2", "--box-probability", "nan"], "--box-probability must be a"),
        (["--bucket", "0.1-0.2", "--box-probability", "1.5"], "--box-probability must be a"),
        (["--bucket", "0.1-0.2", "--dilation", "-1"], "--dilation must be from 0 to 32"),
        (["--bucket", "0.1-0.2", "--dilation", "40"], "--dilation must be from 0 to 32"),
        (["--bucket", "0.1-0.2", "--feather", "-1"], "--feather must be from 0 to 32"),
        (["--bucket", "0.1-0.2", "--seed", "-1"], "--seed must be at least 0"),
        (["--bucket", "0.9-1.5"], "--bucket: bad bucket '0.9-1.5'"),
        (["--bucket", "nan-0.5"], "--bucket: bad bucket 'nan-0.5'"),
    ],
)
def test_masks_numbers_are_checked_and_named(tmp_path, capsys, extra, message):
    assert _masks(tmp_path / "m", *extra) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "m").exists()  # nothing written for a refused run


def test_masks_overwrite_keeps_the_old_set_when_the_new_settings_fail(tmp_path, capsys):
    out = tmp_path / "m"
    assert _masks(out, "--bucket", "0.1-0.2") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # Dilated by 20, no 32x32 mask is 1-2% of the image: this run fails at its first mask,
    # and must not have thrown the old masks away first.
    assert _masks(out, "--bucket", "0.01-0.02", "--dilation", "20", "--overwrite") == 2
    assert "no 32x32" in _error_line(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_masks_checks_every_folder_before_writing_any(tmp_path, capsys):
    out = tmp_path / "all"
    (out / "0.3-0.4").mkdir(parents=True)
    (out / "0.3-0.4" / "notes.txt").write_text("mine")
    assert _masks(out, "--bucket", "all") == 2
    assert "exists and is not empty" in _error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["0.3-0.4"]  # no bucket half-written


def test_masks_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    real = os.replace
    calls = {"n": 0}

    def full_disk(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    out = tmp_path / "m"
    assert _masks(out, "--bucket", "0.1-0.2") == 2
    line = _error_line(capsys)
    assert "could not write" in line and "No space left on device" in line
    assert sorted(p.name for p in out.iterdir()) == ["000000.png"]  # whole files only
    assert _leftovers(out) == []
    # masks.json is written last: a folder without it is an incomplete set.
    assert not (out / "masks.json").exists()


# -------------------------------------------------------------------------------- benchmark
def _benchmark(out: Path, *extra: str) -> int:
    # check_options runs before the checkpoint is read: a missing one is never reached.
    return main(
        ["benchmark", "removal", "--checkpoint", str(out.parent / "none.ckpt"), "--out", str(out)]
        + ["--no-mlflow", *extra]
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--w", "1", "nan"], "--w must be a finite number, got nan"),
        (["--w=-inf"], "--w must be a finite number"),
        (["--w", "1", "--grid-w", "inf"], "--grid-w must be a finite number"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--count", "-1"], "--count must be at least 1"),
        (["--resamples", "0"], "--resamples must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--seed", "-1"], "--seed must be at least 0"),
        (["--case-seed", "-2"], "--case-seed must be at least 0"),
        (["--dilation", "-1"], "--dilation must be at least 0"),
        (["--size", "20"], "--size must be at least 24"),
    ],
)
def test_benchmark_numbers_are_checked_before_the_model_loads(tmp_path, capsys, extra, message):
    assert _benchmark(tmp_path / "out", *extra) == 2
    assert message in _error_line(capsys)


def test_benchmark_refuses_a_busy_out_folder(tmp_path, capsys):
    busy = tmp_path / "out"
    busy.mkdir()
    (busy / "results.json").write_text("mine")
    assert _benchmark(busy) == 2
    line = _error_line(capsys)
    assert "exists and is not empty" in line and "--overwrite" in line
    assert (busy / "results.json").read_text() == "mine"


# --------------------------------------------------------------------------------- describe
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--limit", "0"], "--limit must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--num-workers", "-1"], "--num-workers must be at least 0"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--shard-size", "0"], "--shard-size must be at least 1"),
    ],
)
def test_describe_numbers_are_checked_first(tmp_path, capsys, extra, message):
    config = tmp_path / "fit.yaml"
    config.write_text("data: {}\n")  # never read: the options are checked first
    assert main(["describe", "--config", str(config), *extra]) == 2
    assert message in _error_line(capsys)


# ----------------------------------------------------------------------------------- export
class _FakePipeline:
    """Stands in for a loaded checkpoint: export's folder handling is under test."""

    fail = False

    def __init__(self) -> None:
        self.settings = SimpleNamespace(resolution=32)

    @classmethod
    def from_checkpoint(cls, path, use_ema=True):
        return cls()

    def save_pretrained(self, directory) -> Path:
        from dcgd.sampling.pipeline import SETTINGS_FILE

        directory = Path(directory)
        (directory / "unet").mkdir(parents=True, exist_ok=True)
        (directory / "unet" / "new.bin").write_bytes(b"new")
        if self.fail:
            raise DataError("could not write unet: No space left on device")
        (directory / SETTINGS_FILE).write_text("{}")
        return directory


@pytest.fixture
def fake_export(monkeypatch, tmp_path):
    from dcgd.sampling import pipeline
    from dcgd.sampling.pipeline import SETTINGS_FILE

    monkeypatch.setattr(pipeline, "DCGDPipeline", _FakePipeline)
    monkeypatch.setattr(_FakePipeline, "fail", False)
    old = tmp_path / "models" / "model"
    (old / "unet").mkdir(parents=True)
    (old / "unet" / "old.bin").write_bytes(b"old")
    (old / "vae").mkdir()
    (old / SETTINGS_FILE).write_text('{"old": true}')
    return old


def _export(out: Path, *extra: str) -> int:
    return main(["export", "--checkpoint", str(out.parent / "x.ckpt"), "--out", str(out), *extra])


def test_export_replaces_a_previous_export_whole(fake_export):
    assert _export(fake_export, "--overwrite") == 0
    files = sorted(p.relative_to(fake_export).as_posix() for p in fake_export.rglob("*"))
    # The new export alone: no old.bin or vae/ of the previous model mixed in.
    assert files == ["dcgd_pipeline.json", "unet", "unet/new.bin"]
    assert sorted(p.name for p in fake_export.parent.iterdir()) == ["model"]


def test_a_failed_export_leaves_the_previous_one_untouched(fake_export, monkeypatch, capsys):
    before = {p.relative_to(fake_export): p.read_bytes() for p in fake_export.rglob("*.*")}
    monkeypatch.setattr(_FakePipeline, "fail", True)
    assert _export(fake_export, "--overwrite") == 2
    assert "No space left on device" in _error_line(capsys)
    after = {p.relative_to(fake_export): p.read_bytes() for p in fake_export.rglob("*.*")}
    assert after == before
    assert sorted(p.name for p in fake_export.parent.iterdir()) == ["model"]  # no temp folder


def test_export_out_rules(fake_export, tmp_path, capsys):
    assert _export(fake_export) == 2  # a previous export, without --overwrite
    line = _error_line(capsys)
    assert "exists and is not empty" in line and "--overwrite" in line
    afile = tmp_path / "file"
    afile.write_text("mine")
    assert _export(afile, "--overwrite") == 2
    assert "is a file" in _error_line(capsys)
    assert afile.read_text() == "mine"
    fresh = tmp_path / "new" / "deeper" / "model"
    assert _export(fresh) == 0
    assert (fresh / "unet" / "new.bin").read_bytes() == b"new"


# ----------------------------------------------------------------------------- config values
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buckets": ["0.9-1.5"]}, "buckets: bad bucket '0.9-1.5'"),
        ({"paste_probability": float("nan")}, "paste_probability must be a finite number"),
        ({"same_class_probability": 2.0}, "same_class_probability must be a finite number"),
        ({"box_probability": -0.5}, "box_probability must be a finite number"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"size": 0}, "size must be"),
        ({"paste_dilation": -1}, "paste_dilation must be from 0 to 64"),
        ({"mask_dilation": 100}, "mask_dilation must be from 0 to 64"),
        ({"mask_feather": -1}, "mask_feather must be from 0 to 64"),
        ({"train_length": 0}, "train_length must be at least 1"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"prefetch_factor": 0, "num_workers": 1}, "prefetch_factor must be at least 1"),
    ],
)
def test_data_module_values_are_checked(kwargs, message):
    from dcgd.data.datamodule import InpaintingDataModule

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        InpaintingDataModule(**{"size": 64, **kwargs})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": float("nan")}, "lr must be a finite number greater than 0, got nan"),
        ({"lr": 0.0}, "lr must be a finite number greater than 0"),
        ({"lr": -1e-4}, "lr must be a finite number greater than 0"),
        ({"text_lr": float("inf")}, "text_lr must be a finite number greater than 0"),
        ({"text_lr": 0.0}, "text_lr must be a finite number greater than 0"),
        ({"w": float("nan")}, "w must be a finite number"),
        ({"w_train": float("-inf")}, "w_train must be a finite number"),
        ({"ema_decay": 1.0}, r"ema_decay must be a finite number in \[0, 1\)"),
        ({"ema_decay": -0.1}, r"ema_decay must be a finite number in \[0, 1\)"),
        ({"ema_decay": float("nan")}, "ema_decay must be a finite number"),
        ({"val_steps": 0}, "val_steps must be at least 1"),
        ({"prompt_dropout": 1.5}, "prompt_dropout must be a finite number"),
        ({"weight_decay": -1.0}, "weight_decay must be a finite number"),
        ({"snr_gamma": 0.0}, "snr_gamma must be a finite number greater than 0"),
        ({"cache_gib": float("nan")}, "cache_gib must be a finite number"),
        ({"grid_samples": -1}, "grid_samples must be at least 0"),
        ({"seed": -1}, "seed must be at least 0"),
    ],
)
def test_model_values_are_checked_before_anything_is_built(kwargs, message):
    from dcgd.training.module import DCGDModule

    # No model is given: a value error must be the first thing found, not the missing model.
    with pytest.raises(ConfigError, match=message) as err:
        DCGDModule(**kwargs)
    assert "\n" not in str(err.value)


def test_model_accepts_the_edges_of_its_ranges():
    from tests.training.tiny import tiny_module

    module = tiny_module(ema_decay=0.0, text_lr=None, prompt_dropout=1.0, w=-1.0)
    assert module.ema is not None and module.hparams.w == -1.0
    assert tiny_module(ema_decay=None).ema is None


# ------------------------------------------------------------------------------ the helpers
def test_numbers_helper():
    from dcgd.validation import finite, whole

    assert finite("x", 0.5, 0, 1) == 0.5
    assert finite("x", 1, 0, 1) == 1.0 and isinstance(finite("x", 1), float)
    for bad in (float("nan"), float("inf"), -0.1, 1.1, "0.5", True, None):
        with pytest.raises(ConfigError, match=r"^x must be a finite number in \[0, 1\]"):
            finite("x", bad, 0, 1)
    with pytest.raises(ConfigError, match=r"in \[0, 1\), got 1"):
        finite("x", 1.0, 0, 1, high_open=True)
    with pytest.raises(ConfigError, match="greater than 0, got 0"):
        finite("x", 0.0, 0, low_open=True)
    assert whole("n", 3, 1) == 3 and whole("n", np.int64(3), 1) == 3
    for bad in (0, 2.5, True, "3", float("nan")):
        with pytest.raises(ConfigError, match="^n must be"):
            whole("n", bad, 1)
    with pytest.raises(ConfigError, match="n must be from 1 to 4, got 5"):
        whole("n", 5, 1, 4)


def test_atomic_writes_keep_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    from dcgd.files import save_atomic, write_atomic

    path = tmp_path / "results.json"
    path.write_text("old")
    write_atomic(path, "new")
    assert path.read_text() == "new"

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        save_atomic(path, half_then_crash)
    assert path.read_text() == "new" and _leftovers(tmp_path) == []

    # The temporary name keeps the suffix: PIL and matplotlib pick the format from it.
    seen = []
    save_atomic(tmp_path / "grid.png", lambda tmp: (seen.append(tmp.suffix), tmp.write_bytes(b"")))
    assert seen == [".png"]

    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(DataError, match="could not write .*results.json"):
        write_atomic(path, "newer")
    assert path.read_text() == "new" and _leftovers(tmp_path) == []


# ------------------------------------------------------------------ config files given by hand
@pytest.mark.parametrize(
    "argv, what",
    [
        (["sweep", "--config", "{f}"], "sweep spec"),
        (["describe", "--config", "{f}"], "config file"),
        (["bench", "--config", "{f}"], "bench config"),
    ],
)
@pytest.mark.parametrize(
    "content, why",
    [(b"\x80\x04\x95binary\xff\xfe", "not UTF-8 text"), (b"a: [1, 2\nb: }", "not valid YAML")],
)
def test_a_config_that_is_not_yaml_text_is_one_line(tmp_path, capsys, argv, what, content, why):
    """A checkpoint given as a spec by mistake (binary) or a broken YAML file: one line."""
    path = tmp_path / "given.yaml"
    path.write_bytes(content)
    assert main([a.format(f=path) for a in argv]) == 2
    line = _error_line(capsys)
    assert what in line and why in line
