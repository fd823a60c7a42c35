"""Per-bucket means: exact over all images when per-rank states are reduced, NaN-aware, and
the same from the per-image rows."""

from __future__ import annotations

import math

import pytest
import torch

from dcgd.eval.bucketed import BucketedMetrics, means_from_rows

NAMES = ["psnr", "residue"]


def _fill(metric: BucketedMetrics, values: list[float], buckets: list[int], start: int = 0):
    residue = [
        v / 100 if b != 0 else math.nan for v, b in zip(values, buckets, strict=True)
    ]  # NaN: holes
    metric.update(
        {"psnr": torch.tensor(values), "residue": torch.tensor(residue)},
        torch.tensor(buckets),
        ids=[f"img{start + i}" for i in range(len(values))],
        ratios=[0.05 + 0.1 * b if b >= 0 else 0.5 for b in buckets],
        extra={"kind": ["hole" if b == 0 else "paste" for b in buckets]},
    )


def test_reduced_sums_give_the_mean_over_all_images_not_a_mean_of_rank_means():
    # Two "ranks" with different numbers of images per bucket.
    rank0, rank1 = BucketedMetrics(NAMES), BucketedMetrics(NAMES)
    v0, b0 = [20.0, 30.0, 25.0], [0, 0, 1]
    v1, b1 = [10.0, 40.0, 35.0, 33.0, 1.0], [0, 1, 1, 3, -1]
    _fill(rank0, v0, b0)
    _fill(rank1, v1, b1, start=len(v0))
    rank0.merge_state(rank1)  # applies each state's dist_reduce_fx, as a DDP sync does
    means = rank0.compute()
    assert means["psnr"]["0.01-0.1"] == pytest.approx((20 + 30 + 10) / 3)  # not (25 + 10) / 2
    assert means["psnr"]["0.1-0.2"] == pytest.approx((25 + 40 + 35) / 3)
    assert math.isnan(means["psnr"]["0.2-0.3"])  # empty bucket
    assert means["psnr"]["all"] == pytest.approx((20 + 30 + 25 + 10 + 40 + 35 + 33) / 7)
    assert means["residue"]["0.01-0.1"] != means["residue"]["0.01-0.1"]  # all NaN: skipped
    assert means["residue"]["all"] == pytest.approx((0.25 + 0.40 + 0.35 + 0.33) / 4)
    counts = rank0.counts_per_bucket()
    assert counts == {"0.01-0.1": 3, "0.1-0.2": 3, "0.2-0.3": 0, "0.3-0.4": 1, "all": 7,
                      "outside": 1}  # fmt: skip
    assert rank0.counts_per_metric()["residue"]["all"] == 4


def test_rows_rebuild_the_same_means_and_drop_duplicate_ids():
    metric = BucketedMetrics(NAMES)
    _fill(metric, [20.0, 30.0, 25.0, 12.0], [0, 1, 2, -1])
    _fill(metric, [30.0], [1], start=1)  # img1 again, as a padding sampler repeats it
    rows = metric.gather_rows()
    assert [r["id"] for r in rows] == ["img0", "img1", "img2", "img3"]
    assert rows[3]["bucket"] == "outside" and rows[0]["kind"] == "hole"
    rebuilt = means_from_rows(rows, NAMES)
    assert rebuilt["psnr"]["0.1-0.2"] == 30.0
    assert rebuilt["psnr"]["all"] == pytest.approx(25.0)  # outside images are not in "all"
    assert metric.compute()["psnr"]["0.1-0.2"] == 30.0  # the sums saw img1 twice: same mean
    assert metric.counts_per_bucket()["0.1-0.2"] == 2  # ... but count it twice


def test_bad_updates_are_refused():
    metric = BucketedMetrics(NAMES)
    with pytest.raises(KeyError, match="unknown metrics"):
        metric.update({"fid": torch.zeros(1)}, torch.tensor([0]))
    with pytest.raises(ValueError, match="bucket indices"):
        metric.update({"psnr": torch.zeros(1)}, torch.tensor([7]))
    with pytest.raises(ValueError, match="2 scores for 1 images"):
        metric.update({"psnr": torch.zeros(2)}, torch.tensor([0]))


def _rank(rank: int, world: int, init: str, out: str) -> None:
    """One process of the DDP test: its own images, then the collective reductions."""
    import json

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        metric = BucketedMetrics(NAMES)
        if rank == 0:
            _fill(metric, [20.0, 30.0, 25.0], [0, 0, 1])
        else:
            _fill(metric, [10.0, 40.0, 35.0, 33.0, 1.0], [0, 1, 1, 3, -1], start=3)
        result = {
            "means": metric.compute(),
            "counts": metric.counts_per_bucket(),
            "per_metric": metric.counts_per_metric(),
            "ids": [r["id"] for r in metric.gather_rows()],
            "local": int(metric.images.sum()),
        }
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~10 s of imports
def test_reduction_under_a_real_two_process_group(tmp_path):
    import json

    init = f"file://{tmp_path / 'store'}"
    torch.multiprocessing.start_processes(
        _rank, args=(2, init, str(tmp_path)), nprocs=2, start_method="spawn"
    )
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # The sums are float64 and the scores float32 conversions of the same numbers on both
    # ranks: ~1e-8 off the exact means whatever the order of the reduction, 100x inside
    # approx's default rel=1e-6, and a mean of rank means is ~10% off.
    for result in results:
        psnr = result["means"]["psnr"]
        assert psnr["0.01-0.1"] == pytest.approx((20 + 30 + 10) / 3)
        assert psnr["0.1-0.2"] == pytest.approx((25 + 40 + 35) / 3)
        assert psnr["all"] == pytest.approx((20 + 30 + 25 + 10 + 40 + 35 + 33) / 7)
        assert result["counts"]["all"] == 7 and result["counts"]["outside"] == 1
        assert result["per_metric"]["residue"]["all"] == 4
        assert result["ids"] == [f"img{i}" for i in range(8)]
    assert [r["local"] for r in results] == [3, 4]  # the local states are left unreduced
