"""A tiny CLIP trained once per session on the procedural data, and helpers of the CLIP tests.

The CLIP is trained through the user's own command, ``python -m dcgd fit --config
experiments/clip_procedural.yaml`` (fewer steps, no logger), and loaded from the directory
that run saves, exactly as the describer and the text-encoder training load it.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from dcgd.cli import main
from dcgd.data.datamodule import InpaintingDataModule
from dcgd.describe.base import LabelDescriber

REPO = Path(__file__).resolve().parents[1]
CLIP_CONFIG = REPO / "experiments" / "clip_procedural.yaml"
CLIP_STEPS = 150  # ~25 s of one CPU core; the describer is then ~95% right on 8 classes

PROCEDURAL_VOCABULARY = {
    "object_vocabulary": "procedural_objects.txt",
    "scene_vocabulary": "procedural_scenes.txt",
    "templates": "procedural_templates.txt",
}


@contextmanager
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning threads cost more CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_clip(tmp_path_factory) -> Path:
    """Directory of a tiny CLIP trained on the procedural scenes (open_clip layout)."""
    root = tmp_path_factory.mktemp("clip_procedural")
    args = [
        "fit",
        "--config",
        str(CLIP_CONFIG),
        "--trainer.max_steps",
        str(CLIP_STEPS),
        "--trainer.limit_val_batches",
        "0",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        str(root),
        "--model.init_args.save_dir",
        str(root / "clip"),
    ]
    with one_thread():
        assert main(args) == 0
    return root / "clip"


def procedural_data(**overrides) -> InpaintingDataModule:
    """The data of experiments/clip_procedural.yaml (labels known), overridable."""
    settings = dict(
        dataset="procedural",
        size=32,
        batch_size=16,
        train_length=4000,
        paste_probability=1.0,
        buckets=["0.01-0.1", "0.1-0.2"],
        val_per_bucket=8,
        test_per_bucket=40,
        describer=LabelDescriber(),
    )
    settings.update(overrides)
    return InpaintingDataModule(**settings)


def eval_batch(datamodule: InpaintingDataModule, split: str = "test", count: int | None = None):
    """The first ``count`` samples of an evaluation split as one batch (no descriptions)."""
    dataset = datamodule.dataset(split)
    count = len(dataset) if count is None else count
    batch = default_collate([dataset[i] for i in range(count)])
    batch.pop("skipped")
    return batch
