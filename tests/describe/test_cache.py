"""The description cache: keys, settings folders, resume, who writes, torn files."""

from __future__ import annotations

import json

import pytest
import torch

from dcgd.describe.base import LabelDescriber
from dcgd.describe.cache import CachedDescriber, DescriptionCache, cache_folder, sample_keys
from dcgd.describe.clip_describer import ClipRegionDescriber
from dcgd.describe.clip_model import tiny_clip_config
from dcgd.errors import ConfigError
from tests.clip import PROCEDURAL_VOCABULARY, eval_batch, procedural_data


@pytest.fixture(scope="module")
def batch():
    return eval_batch(procedural_data(paste_probability=0.5), "val")


def _shards(folder):
    return sorted(folder.glob("shard-*.jsonl"))


def test_key_is_source_and_mask_not_target(batch):
    keys = sample_keys(batch)
    assert len(set(keys)) == len(keys)
    changed = dict(batch, target=torch.rand_like(batch["target"]))
    assert sample_keys(changed) == keys
    source = batch["source"].clone()
    source[0, :, 0, 0] = -source[0, :, 0, 0] + 0.5  # one pixel of one image
    other = sample_keys(dict(batch, source=source))
    assert other[0] != keys[0] and other[1:] == keys[1:]
    mask = batch["mask"].clone()
    mask[1, 0, 0, 0] = 1 - mask[1, 0, 0, 0]
    other = sample_keys(dict(batch, mask=mask))
    assert other[1] != keys[1] and other[0] == keys[0]


def test_second_pass_computes_nothing_and_returns_the_same_text(tmp_path, batch):
    first = CachedDescriber(LabelDescriber(), str(tmp_path), write="always")
    computed = first.describe(batch)
    assert first.computed == len(batch["source"]) and first.hits == 0
    first.flush()
    # A new process: reads the shards from disk.
    again = CachedDescriber(LabelDescriber(), str(tmp_path), write="always")
    read = again.describe(batch)
    assert again.computed == 0 and again.hits == len(read)
    assert [(d.t_info, d.t_mask) for d in read] == [(d.t_info, d.t_mask) for d in computed]
    # A target changed under the mask still hits the cache (the key never saw it).
    again.describe(dict(batch, target=torch.zeros_like(batch["target"])))
    assert again.computed == 0


def test_changing_the_settings_starts_a_fresh_folder(tmp_path, batch):
    plain = CachedDescriber(LabelDescriber(), str(tmp_path), write="always")
    plain.describe(batch)
    plain.flush()
    phrased = CachedDescriber(LabelDescriber("a photo of a {}"), str(tmp_path), write="always")
    described = phrased.describe(batch)
    phrased.flush()
    assert phrased.computed == len(batch["source"])  # nothing stale served
    assert plain.cache.root != phrased.cache.root
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [plain.cache.root.name, phrased.cache.root.name]
    )
    assert any(d.t_mask.startswith("a photo of a ") for d in described)
    settings = json.loads((phrased.cache.root / "settings.json").read_text())
    assert settings == LabelDescriber("a photo of a {}").settings()


def test_clip_describer_settings_cover_weights_vocabulary_and_phrasing(tmp_path):
    def folder(**kwargs):
        settings = dict(clip_model_cfg=tiny_clip_config(), **PROCEDURAL_VOCABULARY)
        settings.update(kwargs)
        return cache_folder(tmp_path, ClipRegionDescriber(**settings).settings())

    base = folder()
    assert folder() == base  # same model, same files: same folder
    scenes = tmp_path / "scenes.txt"
    scenes.write_text("grass field\nbrick wall\n")
    other_weights = tiny_clip_config()
    other_weights["vision_cfg"]["layers"] = 1
    changed = [
        folder(scene_vocabulary=str(scenes)),
        folder(mask_top_k=2),
        folder(min_score=0.1),
        folder(info_template="{scene}, {objects}"),
        folder(margin=0.3),
        folder(clip_model_cfg=other_weights),
    ]
    assert len({base, *changed}) == len(changed) + 1


def test_only_rank_zero_writes(tmp_path, batch, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    other_rank = CachedDescriber(LabelDescriber(), str(tmp_path), write="rank0", shard_size=4)
    other_rank.describe(batch)
    other_rank.flush()
    assert not (tmp_path / other_rank.cache.root.name).exists()
    monkeypatch.setenv("RANK", "0")
    rank_zero = CachedDescriber(LabelDescriber(), str(tmp_path), write="rank0", shard_size=4)
    rank_zero.describe(batch)
    rank_zero.flush()
    assert len(_shards(rank_zero.cache.root)) == -(-len(batch["source"]) // 4)
    never = CachedDescriber(LabelDescriber("x {}"), str(tmp_path), write="never")
    never.describe(batch)
    never.flush()
    assert not never.cache.root.exists()


def test_a_killed_writer_leaves_no_half_shard_behind(tmp_path, batch):
    writer = CachedDescriber(LabelDescriber(), str(tmp_path), write="always", shard_size=5)
    writer.describe(batch)  # full shards written, the rest pending (lost if killed now)
    root = writer.cache.root
    written = _shards(root)
    assert 0 < 5 * len(written) < len(batch["source"])
    # What a writer killed mid-write leaves: its temporary file, never a shard name.
    (root / (written[0].name + ".999.tmp")).write_text('{"key": "trunc')
    reader = DescriptionCache(tmp_path, LabelDescriber().settings())
    assert len(reader.entries) == 5 * len(written)
    for path in written:
        for line in path.read_text().splitlines():
            assert set(json.loads(line)) == {"key", "t_info", "t_mask", "scores"}
    # The rerun computes exactly the samples whose shard was never written.
    rerun = CachedDescriber(LabelDescriber(), str(tmp_path), write="always", shard_size=5)
    rerun.describe(batch)
    assert rerun.computed == len(batch["source"]) - 5 * len(written)


def test_write_mode_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="write must be"):
        CachedDescriber(LabelDescriber(), str(tmp_path), write="sometimes")
