"""``python -m dcgd describe``: fills the cache a fit config reads; reruns compute nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dcgd.cli import main
from dcgd.cli.describe import build_datamodule, describe_splits, read_data_section
from dcgd.describe.cache import CachedDescriber
from dcgd.describe.clip_model import tiny_clip_config

REPO = Path(__file__).resolve().parents[2]


def write_config(folder: Path, **data_overrides) -> Path:
    """A fit config (model and trainer included, as users have them) with a CLIP describer."""
    data = {
        "dataset": "procedural",
        "size": 32,
        "batch_size": 8,
        "train_length": 24,
        "paste_probability": 0.5,
        "val_per_bucket": 2,
        "test_per_bucket": 3,
        "description_cache": str(folder / "cache"),
        "describer": {
            "class_path": "dcgd.describe.clip_describer.ClipRegionDescriber",
            "init_args": {
                # Random tiny weights: the command's plumbing, not the text, is under test.
                "clip_model_cfg": tiny_clip_config(),
                "object_vocabulary": "procedural_objects.txt",
                "scene_vocabulary": "procedural_scenes.txt",
                "templates": "procedural_templates.txt",
            },
        },
    }
    data.update(data_overrides)
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": 1},
        "model": {"class_path": "dcgd.training.module.DCGDModule", "init_args": {}},
        "data": {"class_path": "dcgd.data.datamodule.InpaintingDataModule", "init_args": data},
    }
    path = folder / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _counts(output: str) -> dict[str, tuple[int, int, int]]:
    """``{split: (samples, computed, from cache)}`` from the command's summary lines."""
    counts = {}
    for line in output.splitlines():
        split, _, rest = line.partition(": ")
        if split in ("train", "val", "test"):
            numbers = [int(word) for word in rest.replace(",", "").split() if word.isdigit()]
            counts[split] = tuple(numbers[:3])
    return counts


def test_describe_fills_the_cache_and_a_rerun_computes_nothing(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["describe", "--config", str(config), "--epochs", "2"]) == 0
    first = _counts(capsys.readouterr().out)
    # val: 2 per bucket x 4 buckets; test: 3 x 4; train: 2 epochs of 24.
    assert first == {"train": (48, 48, 0), "val": (8, 8, 0), "test": (12, 12, 0)}
    assert main(["describe", "--config", str(config), "--epochs", "2"]) == 0
    second = _counts(capsys.readouterr().out)
    assert second == {"train": (48, 0, 48), "val": (8, 0, 8), "test": (12, 0, 12)}

    # Training reads that cache: the data module's loaders (their collate step) describe
    # every val sample from it, in a plain loop, with no Lightning hook.
    datamodule = build_datamodule(read_data_section([config]))
    assert isinstance(datamodule.describer, CachedDescriber)
    loader = datamodule.val_dataloader()
    for batch in loader:
        assert len(batch["t_info"]) == len(batch["t_mask"]) == len(batch["source"])
    assert datamodule.describer.computed == 0 and datamodule.describer.hits == 8


def test_a_rerun_computes_only_what_is_missing(tmp_path):
    config = write_config(tmp_path)
    datamodule = build_datamodule(read_data_section([config]))
    describer = datamodule.describer.describer
    cache = str(tmp_path / "other")
    (partial,) = describe_splits(datamodule, describer, cache, ["test"], limit=5, progress=False)
    assert (partial.samples, partial.computed) == (5, 5)
    (rest,) = describe_splits(datamodule, describer, cache, ["test"], progress=False)
    assert (rest.samples, rest.computed, rest.from_cache) == (12, 7, 5)


def test_composed_configs_and_cache_override(tmp_path, capsys):
    config = write_config(tmp_path)
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump({"data": {"init_args": {"test_per_bucket": 1}}}))
    args = ["describe", "--config", str(config), "--config", str(smaller)]
    assert main([*args, "--split", "test", "--cache", str(tmp_path / "elsewhere")]) == 0
    assert _counts(capsys.readouterr().out) == {"test": (4, 4, 0)}
    (folder,) = (tmp_path / "elsewhere").iterdir()
    assert (folder / "settings.json").is_file()
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    """SIGKILL mid-run: the shards on disk are whole, the rerun describes only the rest."""
    config = write_config(tmp_path, train_length=120)
    args = ["describe", "--config", str(config), "--split", "train", "--batch-size", "1"]
    args += ["--shard-size", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "dcgd", *args], cwd=tmp_path, env=env)
    cache = tmp_path / "cache"
    deadline = time.monotonic() + 120
    while len(list(cache.glob("*/shard-*.jsonl"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards = list(cache.glob("*/shard-*.jsonl"))
    assert 5 <= len(shards) < 120
    for shard in shards:  # atomic writes: every shard is complete JSON
        assert json.loads(shard.read_text())["t_info"]

    datamodule = build_datamodule(read_data_section([config]))
    (report,) = describe_splits(
        datamodule, datamodule.describer.describer, str(cache), ["train"], progress=False
    )
    assert report.samples == 120
    assert report.from_cache == len(shards)
    assert report.computed == 120 - len(shards)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"describer": None}, "has no describer"),
        ({"description_cache": None}, "no cache folder"),
        (
            {
                "describer": {
                    "class_path": "dcgd.describe.clip_describer.ClipRegionDescriber",
                    "init_args": {"clip_model": "ViT-Nope-32", "clip_pretrained": "x"},
                }
            },
            "neither an open_clip model name",
        ),
        (
            {
                "describer": {
                    "class_path": "dcgd.describe.clip_describer.ClipRegionDescriber",
                    "init_args": {
                        "clip_model_cfg": tiny_clip_config(),
                        "object_vocabulary": "missing_objects.txt",
                    },
                }
            },
            "object vocabulary file 'missing_objects.txt' not found",
        ),
        ({"sizee": 32}, "sizee"),
    ],
)
def test_user_errors_are_one_clear_line(tmp_path, capsys, change, message):
    config = write_config(tmp_path, **change)
    assert main(["describe", "--config", str(config), "--split", "val"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_missing_config_file(tmp_path, capsys):
    assert main(["describe", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_listed_in_help(capsys):
    assert main(["--help"]) == 0
    assert "describe" in capsys.readouterr().out
