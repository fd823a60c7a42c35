"""Descriptions under DDP: 2 CPU processes (gloo) give what 1 process gives; rank 0 writes."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler

from dcgd.describe.cache import CachedDescriber, sample_keys
from dcgd.describe.clip_describer import ClipRegionDescriber
from tests.clip import PROCEDURAL_VOCABULARY, procedural_data

pytestmark = pytest.mark.slow  # two processes start (~10 s) and the session CLIP is trained


def _describe(describer, loader) -> dict[str, dict]:
    out = {}
    for batch in loader:
        batch.pop("skipped")
        for key, sample_id, d in zip(
            sample_keys(batch), batch["id"], describer.describe(batch), strict=True
        ):
            out[sample_id] = {
                "key": key,
                "t_info": d.t_info,
                "t_mask": d.t_mask,
                "scores": d.scores,
            }
    return out


# CLIP's probabilities of the candidates: other batch shapes and thread counts move them by
# ~1e-6 (float rounding; they are logged to 6 decimals), another image by ~1e-1.
PROBABILITY_ATOL = 1e-4


def _assert_same_scores(got: dict, want: dict, sample_id: str) -> None:
    """The same probabilities per candidate; a candidate may drop out of a shortlist only at
    its cut, where float noise can swap it with the next one."""
    for part, ranked in want.items():
        theirs = dict(got[part])
        for name, p in ranked:
            if name in theirs:
                assert abs(theirs[name] - p) <= PROBABILITY_ATOL, (sample_id, part, name)
            else:
                assert p <= min(theirs.values()) + PROBABILITY_ATOL, (sample_id, part, name)


def _near_tie(scores: dict) -> bool:
    """Whether float noise could reorder the candidates a description is made of: the top 2
    objects of the region (T_mask takes 1), the top 2 scenes, the top 4 objects of the
    context (T_info takes 2, after leaving out T_mask's)."""
    gaps = [
        a[1] - b[1]
        for ranked, top in ((scores["mask"], 2), (scores["scene"], 2), (scores["context"], 4))
        for a, b in pairwise(ranked[:top])
    ]
    return any(gap <= 2 * PROBABILITY_ATOL for gap in gaps)


def _rank(rank: int, world: int, clip_dir: str, cache_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world
    )
    try:
        dataset = procedural_data().dataset("test")
        # The evaluation loaders of a DDP run: each rank a disjoint shard of the same set.
        sampler = DistributedSampler(dataset, world, rank, shuffle=False)
        loader = DataLoader(dataset, batch_size=8, sampler=sampler)
        describer = CachedDescriber(
            ClipRegionDescriber(clip_model=clip_dir, **PROCEDURAL_VOCABULARY),
            cache_dir,
            write="rank0",
        )
        mine = _describe(describer, loader)
        describer.flush()
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            merged = {k: v for part in gathered for k, v in part.items()}
            Path(out_dir, "described.json").write_text(json.dumps(merged))
            Path(out_dir, "rank0_keys.json").write_text(
                json.dumps(sorted(v["key"] for v in mine.values()))
            )
    finally:
        dist.destroy_process_group()


def test_two_ranks_describe_like_one_and_only_rank_zero_writes(trained_clip, tmp_path):
    cache_dir, out_dir = tmp_path / "cache", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_rank, args=(2, str(trained_clip), str(cache_dir), str(out_dir)), nprocs=2)
    two_ranks = json.loads((out_dir / "described.json").read_text())

    dataset = procedural_data().dataset("test")
    one = ClipRegionDescriber(clip_model=str(trained_clip), **PROCEDURAL_VOCABULARY)
    one_process = _describe(one, DataLoader(dataset, batch_size=16))
    assert len(one_process) == len(dataset) == len(two_ranks)
    assert two_ranks.keys() == one_process.keys()
    # The same samples, scored alike; the same texts wherever no near tie of two candidates
    # lets float rounding (other batches, threads, kernels) pick the other one.
    ties = 0
    for sample_id, want in one_process.items():
        got = two_ranks[sample_id]
        assert got["key"] == want["key"], sample_id
        _assert_same_scores(got["scores"], want["scores"], sample_id)
        _assert_same_scores(want["scores"], got["scores"], sample_id)
        if _near_tie(want["scores"]):
            ties += 1
        else:
            assert (got["t_info"], got["t_mask"]) == (want["t_info"], want["t_mask"]), sample_id
    assert ties <= len(dataset) // 20, ties  # the texts are compared for nearly every sample

    # Rank 0 wrote its own samples; rank 1 computed its shard but wrote nothing.
    (folder,) = cache_dir.iterdir()
    written = [
        json.loads(line)["key"]
        for shard in folder.glob("shard-*.jsonl")
        for line in shard.read_text().splitlines()
    ]
    assert sorted(written) == json.loads((out_dir / "rank0_keys.json").read_text())
    assert 0 < len(written) < len(dataset)
    assert not list(folder.glob("*.tmp"))
