"""DDP that is right: 2 CPU processes over gloo (Lightning ``ddp_spawn``) against 1 process.

One tiny fit on each side (VAE latent space, eq. 7 with joint text-encoder training, EMA,
a validation at the end): 1 process with batch 4, then 2 ranks with batch 2. The same global
batches give the same loss trajectory, the same (averaged) gradients, the same final weights
and validation metrics (reduced over samples, not averaged per rank: the 3-sample validation
set is padded to 4 by Lightning's sampler); the evaluation sets and descriptions are the same
on every rank; rank 0 alone writes checkpoints and the description cache.

The two sides sum the same numbers in other orders (other batch shapes, thread counts and
kernels), so floats agree to rounding, never bit for bit, and the tolerances are sized for
that on any x86 CPU (see the comments at each comparison).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dcgd.components.latent_space import tiny_vae_config
from dcgd.data.datamodule import InpaintingDataModule
from dcgd.describe.base import LabelDescriber
from tests.training.tiny import tiny_module

pytestmark = pytest.mark.slow  # two processes start and import the stack (~10-20 s)

# Two channels per GroupNorm group at least: with one, a conv bias before the norm has a zero
# gradient, and Adam turns its float noise into full-size, rank-dependent updates.
MODEL = {
    "latent_space": "vae",
    "vae_config": tiny_vae_config(),
    "unet_config": {"block_out_channels": [16, 32]},
    "ema_decay": 0.9,
    "lr": 1e-3,
    "text_lr": 1e-4,
    "val_steps": 2,
}
STEPS = 3
GLOBAL_BATCH = 4
BUCKETS = ["0.01-0.1", "0.1-0.2", "0.2-0.3"]  # one validation sample each: 3, padded to 4


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _gather(obj):
    """Every rank's ``obj``, in rank order (a list of one without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _fingerprint(dataset) -> str:
    """Hash of every sample of an evaluation set: ids and pixels."""
    digest = hashlib.sha256()
    for i in range(len(dataset)):
        sample = dataset[i]
        digest.update(sample["id"].encode())
        for name in ("source", "target", "mask"):
            digest.update(sample[name].numpy().tobytes())
    return digest.hexdigest()


class Record(L.Callback):
    """Writes, from rank 0, what every rank saw: per step the mean loss and sample ids of
    the global batch; per validation batch the ids and descriptions; the evaluation sets."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, row: dict) -> None:
        if _rank() == 0:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def on_fit_start(self, trainer, pl_module) -> None:
        data = trainer.datamodule
        mine = {
            "pid": os.getpid(),
            "val": _fingerprint(data.dataset("val")),
            "test": _fingerprint(data.dataset("test")),
        }
        self._write({"ranks": _gather(mine)})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        losses = _gather(outputs["loss"].item())
        ids = [i for part in _gather(list(batch["id"])) for i in part]
        # Equal local batches: the global batch's loss is the mean of the ranks' means.
        self._write(
            {"step": trainer.global_step - 1, "loss": sum(losses) / len(losses), "ids": ids}
        )

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        seen = list(zip(batch["id"], batch["t_info"], batch["t_mask"], strict=True))
        self._write({"val_batch": _gather(seen)})

    def on_fit_end(self, trainer, pl_module) -> None:
        trainer.datamodule.describer.flush()  # a no-op but on rank 0
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self._write({"val_metrics": metrics})
        # What the loggers got as train/loss at the last step (synced over the ranks).
        self._write({"logged_train_loss": float(trainer.callback_metrics["train/loss"])})


class RecordGrads(L.Callback):
    """Saves, from rank 0, the gradient of every trainable parameter at step 0 as the optimizer
    gets it: under DDP, after the all-reduce that averages it over the ranks."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == 0 and _rank() == 0:
            grads = {
                n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None
            }
            torch.save(grads, self.path)


class RecordWrites(TorchCheckpointIO):
    """The real checkpoint writer, noting which rank wrote which file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        with open(self.path, "a") as f:
            f.write(json.dumps({"rank": _rank(), "file": Path(path).name}) + "\n")


def _fit(root: Path, devices: int) -> list[dict]:
    root.mkdir()
    module = tiny_module(**MODEL)
    data = InpaintingDataModule(
        size=32,
        batch_size=GLOBAL_BATCH // devices,
        train_length=16,
        buckets=BUCKETS,
        val_per_bucket=1,
        test_per_bucket=1,
        describer=LabelDescriber(),
        description_cache=str(root / "descriptions"),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_steps=STEPS,
        val_check_interval=STEPS,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[
            Record(str(root / "record.jsonl")),
            RecordGrads(str(root / "grads.pt")),
            ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, every_n_train_steps=1),
        ],
        plugins=[RecordWrites(str(root / "writes.jsonl"))],
    )
    trainer.fit(module, data)
    return [json.loads(line) for line in (root / "record.jsonl").read_text().splitlines()]


def _rows(record: list[dict], key: str) -> list:
    return [row[key] for row in record if key in row]


def _weights(root: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def test_two_ranks_train_and_validate_like_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned ranks: one thread each
    one = _fit(tmp_path / "one", devices=1)
    two = _fit(tmp_path / "two", devices=2)

    # The same global batches, drawn as disjoint shards: rank 0 takes samples 0, 2 of the
    # global batch, rank 1 samples 1, 3.
    steps_one, steps_two = _rows(one, "step"), _rows(two, "step")
    assert steps_one == steps_two == list(range(STEPS))
    ids_one, ids_two = _rows(one, "ids"), _rows(two, "ids")
    for a, b in zip(ids_one, ids_two, strict=True):
        assert len(set(b)) == GLOBAL_BATCH and sorted(a) == sorted(b)
    assert len({i for ids in ids_one for i in ids}) == STEPS * GLOBAL_BATCH  # the data moved on

    # Same loss trajectory (the noise of a sample does not depend on its rank or position),
    # and the logged train/loss is the global batch's, not rank 0's.
    torch.testing.assert_close(_rows(two, "loss"), _rows(one, "loss"), rtol=1e-5, atol=1e-6)
    logged = _rows(two, "logged_train_loss")
    torch.testing.assert_close(logged, _rows(two, "loss")[-1:], rtol=1e-5, atol=1e-6)

    # Same gradients at step 0, from the same weights: the one process's over its batch of 4,
    # and rank 0's after DDP averaged the two ranks' batches of 2. Each tensor elementwise
    # within 1e-3 of its largest |gradient|: float rounding moves them by ~1e-5 of that here
    # (other batch shapes, threads and kernels sum the terms in another order), while a DDP
    # that summed instead of averaging, or a rank on other data, moves them by ~1x.
    g1, g2 = torch.load(tmp_path / "one" / "grads.pt"), torch.load(tmp_path / "two" / "grads.pt")
    assert g1.keys() == g2.keys() and any(k.startswith("text.") for k in g1)  # joint training
    # Tensors whose gradient is 0 but for float noise (~1e-9 of the largest gradient of their
    # model, against 3e-4 or more for the smallest real one): the key biases of the text
    # encoder's attention, which a softmax over keys cannot see. Compared as noise on both
    # sides; their Adam steps, set by that noise, are left out of the weights below.
    largest = {}
    for key, grad in g1.items():
        model = key.split(".")[0]  # unet or text
        largest[model] = max(largest.get(model, 0.0), float(grad.abs().max()))
    noise = {k for k, g in g1.items() if g.abs().max() < 1e-6 * largest[k.split(".")[0]]}
    assert noise == {k for k in g1 if k.endswith("self_attn.k_proj.bias")}, sorted(noise)
    for key in g1:
        if key in noise:
            assert g2[key].abs().max() < 1e-6 * largest[key.split(".")[0]], key
        else:
            atol = 1e-3 * float(g1[key].abs().max())
            torch.testing.assert_close(g2[key], g1[key], rtol=0, atol=atol, msg=key)

    # Same weights at the end: U-Net, text encoder and EMA, each as a whole within 1e-2 of how
    # far training moved it (~4e-5 here), not elementwise: after Adam's steps an element whose
    # gradient is near 0 moves by a step whose size float noise sets (Adam divides by the
    # gradient's root mean square), which differs between CPUs by up to ~lr. Ranks that did
    # not average their gradients would be ~0.9 of the move apart (summed ones only ~1e-3:
    # Adam does not see a gradient's scale, which is why the gradients are compared above).
    start = tiny_module(**MODEL).state_dict()
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert w1.keys() == w2.keys()
    for part in ("unet.", "text.", "ema."):
        keys = [
            k for k in w1 if k.startswith(part) and w1[k].is_floating_point() and k not in noise
        ]
        moved = torch.cat([(w1[k] - start[k]).flatten() for k in keys]).norm()
        apart = torch.cat([(w2[k] - w1[k]).flatten() for k in keys]).norm()
        assert moved > 0.01 and apart < 1e-2 * moved, (part, float(apart), float(moved))
    for key in w1:  # what training does not change is the same bit for bit
        if not w1[key].is_floating_point() or torch.equal(w1[key], start[key]):
            assert torch.equal(w2[key], w1[key]), key

    # Validation: rank 1's shard was padded with a repeat of sample 0, yet the means are over
    # the 3 distinct samples, as in one process.
    (val_one,), (val_two,) = _rows(one, "val_batch"), _rows(two, "val_batch")
    seen_two = [sample for rank in val_two for sample in rank]
    assert len(seen_two) == 4 and len({s[0] for s in seen_two}) == 3
    assert sorted(map(tuple, val_one[0])) == sorted({tuple(s) for s in seen_two})  # + texts
    (metrics_one,), (metrics_two,) = _rows(one, "val_metrics"), _rows(two, "val_metrics")
    assert set(metrics_one) == {"val/loss", "val/mae"}
    # Within 1e-3: the weights they are computed from may be 1e-2 of the move apart (above),
    # which shifts these by ~2e-4; a mean with the padded repeat (or of the ranks' means)
    # would be 3e-2 (val/loss) and 1e-1 (val/mae) off.
    for key, value in metrics_one.items():
        assert metrics_two[key] == pytest.approx(value, rel=1e-3), key

    # The evaluation sets are the same on every rank and in the single process.
    (ranks_one,), (ranks_two,) = _rows(one, "ranks"), _rows(two, "ranks")
    assert {r["val"] for r in ranks_two} == {ranks_one[0]["val"]}
    assert {r["test"] for r in ranks_two} == {ranks_one[0]["test"]}

    # Rank 0 alone wrote the checkpoints, each once, as the single process did; and it alone
    # wrote the description cache.
    writes = {
        run: [
            json.loads(line) for line in (tmp_path / run / "writes.jsonl").read_text().splitlines()
        ]
        for run in ("one", "two")
    }
    assert {w["rank"] for w in writes["two"]} == {0}
    # ddp_spawn also hands rank 0's weights back to the main process through .temp.ckpt.
    assert [w for w in writes["two"] if w["file"] != ".temp.ckpt"] == writes["one"]
    assert [w["file"] for w in writes["one"]][-2:] == [f"epoch=0-step={STEPS}.ckpt", "last.ckpt"]
    shards = list((tmp_path / "two" / "descriptions").glob("*/shard-*.jsonl"))
    assert shards, "rank 0 flushed its descriptions"
    rank0_pid = ranks_two[0]["pid"]
    assert all(f"-{rank0_pid}-" in shard.name for shard in shards)
