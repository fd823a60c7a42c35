"""Kill a tiny ``fit`` mid-epoch, resume it from its checkpoint: the rest of the run is the
run that was never interrupted (losses, then weights, EMA and optimizer state bit for bit)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from dcgd.cli import main

QUICKSTART = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")
STEPS = 7  # 5 batches per epoch: the resumed part crosses an epoch boundary
KILL_AT = 4  # killed while running step 4; the last checkpoint is from step 3


class Killed(Exception):
    """Stands for SIGKILL / a node failure."""


class KillAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed at step {self.step}")


class RecordLosses(L.Callback):
    """Appends ``[step, loss, first sample id]`` lines to a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.path, "a") as f:
            row = [trainer.global_step - 1, outputs["loss"].item(), batch["id"][0]]
            f.write(json.dumps(row) + "\n")


def _fit(root: Path, *extra: str, kill: bool = False) -> None:
    callbacks = [{"class_path": f"{__name__}.RecordLosses", "init_args": {"path": str(root)}}]
    if kill:
        callbacks.append({"class_path": f"{__name__}.KillAt", "init_args": {"step": KILL_AT}})
    args = [
        "fit", "--config", QUICKSTART,
        "--trainer.default_root_dir", str(root.parent / root.stem),
        "--trainer.max_steps", str(STEPS),
        "--trainer.logger", "false",
        "--trainer.limit_val_batches", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.callbacks", json.dumps(callbacks),
        "--checkpoint.every_n_train_steps", "3",
        "--model.init_args.unet_config", '{"block_out_channels": [8, 16]}',
        "--model.init_args.text_encoder_config", '{"hidden_size": 16}',
        "--data.init_args.size", "32",
        "--data.init_args.batch_size", "2",
        "--data.init_args.train_length", "10",
        *extra,
    ]  # fmt: skip
    assert main(args) == 0


def _losses(path: Path) -> list[tuple[int, float, str]]:
    """``(step, loss, first sample id)`` in the order the steps ran."""
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()]


def _state(root: Path) -> dict:
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {"model": ckpt["state_dict"], "optimizer": ckpt["optimizer_states"]}


@pytest.mark.slow
def test_killed_and_resumed_fit_equals_the_uninterrupted_one(workdir):
    _fit(workdir / "straight.jsonl")
    with pytest.raises(Killed):
        _fit(workdir / "killed.jsonl", kill=True)
    _fit(workdir / "killed.jsonl", "--ckpt_path", "last")

    straight = {step: rest for step, *rest in _losses(workdir / "straight.jsonl")}
    assert sorted(straight) == list(range(STEPS))
    # killed.jsonl: steps 0-3 of the killed run, then 3-6 of the resumed one (from step 3).
    killed = _losses(workdir / "killed.jsonl")
    assert [row[0] for row in killed] == [0, 1, 2, 3, *range(3, STEPS)]
    for step, *value in killed:
        assert value == straight[step], f"step {step}: {value} != uninterrupted {straight[step]}"
    assert len({sample for _, sample in straight.values()}) > 1  # the data did move on

    # Bit for bit, losses above included: both runs are this process, with the same threads,
    # kernels and batch shapes, and the resumed weights are copied into the module's own
    # (aligned) tensors, so every float is computed the same way on any CPU.
    a, b = _state(workdir / "straight"), _state(workdir / "killed")
    assert a["model"].keys() == b["model"].keys()
    # The last checkpoint is from step 6; its EMA has averaged exactly the 6 steps' weights.
    assert int(a["model"]["ema.num_updates"]) == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for (ka, va), (kb, vb) in zip(
        a["optimizer"][0]["state"].items(), b["optimizer"][0]["state"].items(), strict=True
    ):
        assert ka == kb and all(torch.equal(va[k], vb[k]) for k in va)
