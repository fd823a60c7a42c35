"""No command runs code from a checkpoint, and a damaged one gets one line, never a traceback.

Every command that opens a ``.ckpt`` is given (a) a real dcgd checkpoint with a pickle payload
that would create a folder when unpickled, (b) a truncated checkpoint, (c) random bytes. The
folder must never appear and each command must stop with exit code 2 and one ``error:`` line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgd.checkpoints import load_checkpoint, load_torch_file
from dcgd.cli import main
from dcgd.errors import ModelLoadError
from tests.training.tiny import fit_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "experiments" / "quickstart.yaml")


class MakesFolder:
    """Unpickling this calls ``os.makedirs(path)``: the stand-in for any code in a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path,))


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    return fit_tiny_checkpoint(tmp_path_factory.mktemp("payload-ckpt"))


def hostile_checkpoint(real: Path, folder: Path, marker: Path) -> Path:
    """The real checkpoint with one more entry whose unpickling creates ``marker``."""
    content = torch.load(real, map_location="cpu", weights_only=True)
    content["callbacks"] = {"Innocent": MakesFolder(marker)}
    path = folder / "hostile.ckpt"
    torch.save(content, path)
    return path


def damaged_checkpoint(real: Path, folder: Path, kind: str) -> Path:
    data = real.read_bytes()
    path = folder / f"{kind}.ckpt"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def test_the_payload_really_runs_when_unpickled_without_the_reader(real_checkpoint, tmp_path):
    """Guards the other tests: the payload is live, so its absence below means it was refused."""
    marker = tmp_path / "ran"
    path = hostile_checkpoint(real_checkpoint, tmp_path, marker)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.is_dir()


def test_reader_refuses_the_payload_and_names_it(real_checkpoint, tmp_path):
    marker = tmp_path / "ran"
    path = hostile_checkpoint(real_checkpoint, tmp_path, marker)
    with pytest.raises(ModelLoadError, match=r"would run code.*") as err:
        load_checkpoint(path)
    assert "os.makedirs" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_reader_loads_a_real_checkpoint_with_its_tensors(real_checkpoint):
    checkpoint = load_checkpoint(real_checkpoint)
    weights = torch.load(real_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert checkpoint["state_dict"].keys() == weights.keys()
    assert all(torch.equal(checkpoint["state_dict"][k], v) for k, v in weights.items())


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_reader_turns_a_damaged_file_into_one_line(real_checkpoint, tmp_path, kind):
    with pytest.raises(ModelLoadError, match="truncated or not a torch file"):
        load_torch_file(damaged_checkpoint(real_checkpoint, tmp_path, kind))


def test_nothing_in_dcgd_calls_torch_load_but_the_reader():
    callers = [
        p.relative_to(REPO).as_posix()
        for p in (REPO / "dcgd").rglob("*.py")
        if "torch.load(" in p.read_text()
    ]
    assert callers == ["dcgd/checkpoints.py"]


def _photo(folder: Path) -> tuple[Path, Path]:
    image = folder / "photo.png"
    mask = folder / "photo_mask.png"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(image)
    hole = np.zeros((32, 32), np.uint8)
    hole[8:20, 8:20] = 255
    Image.fromarray(hole).save(mask)
    return image, mask


def _commands(checkpoint: Path, folder: Path) -> dict[str, list[str]]:
    image, mask = _photo(folder)
    last_root = folder / "resume"
    (last_root / "checkpoints").mkdir(parents=True, exist_ok=True)
    (last_root / "checkpoints" / "last.ckpt").write_bytes(checkpoint.read_bytes())
    return {
        "remove": ["remove", "--checkpoint", str(checkpoint), "--image", str(image),
                   "--mask", str(mask), "--out", str(folder / "out.png")],
        "export": ["export", "--checkpoint", str(checkpoint), "--out", str(folder / "exported")],
        "benchmark": ["benchmark", "removal", "--checkpoint", str(checkpoint),
                      "--out", str(folder / "bench"), "--count", "2"],
        "sweep": ["sweep", "--config", str(REPO / "sweeps" / "quickstart_ablation.yaml"),
                  "--checkpoint", str(checkpoint), "--storage",
                  f"sqlite:///{folder / 'optuna.db'}", "--tracking-uri",
                  f"sqlite:///{folder / 'mlflow.db'}"],
        "test": ["test", "--config", QUICKSTART, "--ckpt_path", str(checkpoint),
                 "--trainer.default_root_dir", str(folder / "test-run")],
        "fit": ["fit", "--config", QUICKSTART, "--ckpt_path", str(checkpoint),
                "--trainer.default_root_dir", str(folder / "fit-run")],
        "fit-last": ["fit", "--config", QUICKSTART, "--ckpt_path", "last",
                     "--trainer.default_root_dir", str(last_root)],
    }  # fmt: skip


COMMANDS = ["remove", "export", "benchmark", "sweep", "test", "fit", "fit-last"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_runs_the_payload(real_checkpoint, workdir, capsys, command):
    marker = workdir / "payload-ran"
    hostile = hostile_checkpoint(real_checkpoint, workdir, marker)
    assert main(_commands(hostile, workdir)[command]) == 2
    line = _one_error_line(capsys)
    assert "would run code" in line and "os.makedirs" in line
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_says_a_damaged_checkpoint_in_one_line(
    real_checkpoint, workdir, capsys, command, kind
):
    damaged = damaged_checkpoint(real_checkpoint, workdir, kind)
    assert main(_commands(damaged, workdir)[command]) == 2
    assert "truncated or not a torch file" in _one_error_line(capsys)
