"""Per-bucket means of per-image scores, exact under DDP.

``BucketedMetrics`` keeps, for every metric and bucket, the SUM of the per-image scores and
the COUNT of images (states reduced with ``"sum"``). The mean is computed once, after the
ranks' sums are added, so it is the mean over all images, not an average of per-rank means.

Per-image rows (id, bucket, ratio, scores) are kept in a plain Python list, not a metric
state (ids are strings). ``gather_rows()`` collects them on every rank with
``torch.distributed.all_gather_object`` when a process group is up (call it on all ranks),
and otherwise returns the local rows; duplicate ids (a padding DistributedSampler repeats a
few samples to even out the ranks) are dropped, first one kept. The sums cannot be
de-duplicated that way: under DDP evaluate with a sampler that does not pad, or rebuild the
means from the gathered rows with ``means_from_rows``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torchmetrics import Metric

from dcgd.data.buckets import OUTSIDE, PAPER_BUCKETS, Bucket

ALL = "all"


class BucketedMetrics(Metric):
    """Accumulates per-image scores into per-bucket sums and counts.

    ``update(scores, bucket, ids=None, ratios=None, extra=None)``: ``scores`` maps each metric
    name to a ``[B]`` tensor; ``bucket`` is ``[B]`` long (index into ``buckets``, ``OUTSIDE`` =
    -1); ``extra`` adds columns to the per-image rows (e.g. ``{"kind": [...]}``).
    Images outside every bucket are counted (``n_outside``) but not scored. A NaN score
    (a metric undefined for that image) is skipped for that metric only.

    ``compute()`` -> ``{metric: {bucket_name: mean, ..., "all": mean}}``, NaN for an empty
    bucket; ``counts_per_bucket()`` -> ``{bucket_name: n, ..., "all": n, "outside": n}``;
    ``counts_per_metric()`` -> ``{metric: {bucket_name: n, ..., "all": n}}``.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(
        self,
        metric_names: Sequence[str],
        buckets: Sequence[Bucket] = PAPER_BUCKETS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not metric_names:
            raise ValueError("BucketedMetrics needs at least one metric name")
        self.metric_names = list(metric_names)
        self.buckets = tuple(buckets)
        shape = (len(self.metric_names), len(self.buckets))
        # float64 sums: tens of thousands of PSNRs add up without losing digits.
        self.add_state("sums", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "images", torch.zeros(len(self.buckets), dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("n_outside", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self._rows: list[dict] = []

    @property
    def bucket_names(self) -> list[str]:
        return [b.name for b in self.buckets]

    def update(
        self,
        scores: Mapping[str, torch.Tensor],
        bucket: torch.Tensor,
        ids: Sequence[str] | None = None,
        ratios: torch.Tensor | Sequence[float] | None = None,
        extra: Mapping[str, Sequence] | None = None,
    ) -> None:
        unknown = set(scores) - set(self.metric_names)
        if unknown:
            raise KeyError(
                f"scores for unknown metrics {sorted(unknown)}; known: {self.metric_names}"
            )
        bucket = torch.as_tensor(bucket, device=self.sums.device).long().flatten()
        n = bucket.numel()
        inside = bucket != OUTSIDE
        if bool(((bucket < OUTSIDE) | (bucket >= len(self.buckets))).any()):
            raise ValueError(
                f"bucket indices must be in [-1, {len(self.buckets) - 1}], got {bucket.tolist()}"
            )
        self.n_outside += (~inside).sum()
        self.images += torch.bincount(bucket[inside], minlength=len(self.buckets))
        for i, name in enumerate(self.metric_names):
            if name not in scores:
                continue
            values = scores[name].detach().to(self.sums.device, torch.float64).flatten()
            if values.numel() != n:
                raise ValueError(f"{name}: {values.numel()} scores for {n} images")
            keep = inside & ~values.isnan()
            self.sums[i] += torch.zeros(
                len(self.buckets), dtype=torch.float64, device=self.sums.device
            ).index_add_(0, bucket[keep], values[keep])
            self.counts[i] += torch.bincount(bucket[keep], minlength=len(self.buckets))
        ids = list(ids) if ids is not None else [None] * n
        ratios = [float(r) for r in ratios] if ratios is not None else [math.nan] * n
        extra = {k: list(v) for k, v in (extra or {}).items()}
        for key, column in extra.items():
            if len(column) != n:
                raise ValueError(f"extra column {key!r}: {len(column)} values for {n} images")
        names = self.bucket_names
        values = {m: scores[m].detach().flatten().tolist() for m in scores}  # one device sync
        for j, b in enumerate(bucket.tolist()):
            row = {
                "id": ids[j],
                "bucket": names[b] if b != OUTSIDE else "outside",
                "ratio": ratios[j],
                **{key: column[j] for key, column in extra.items()},
            }
            for name in self.metric_names:
                row[name] = float(values[name][j]) if name in values else math.nan
            self._rows.append(row)

    def compute(self) -> dict[str, dict[str, float]]:
        means = {}
        for i, name in enumerate(self.metric_names):
            per = {}
            for k, bname in enumerate(self.bucket_names):
                c = int(self.counts[i, k])
                per[bname] = float(self.sums[i, k]) / c if c else math.nan
            total = int(self.counts[i].sum())
            per[ALL] = float(self.sums[i].sum()) / total if total else math.nan
            means[name] = per
        return means

    def counts_per_metric(self) -> dict[str, dict[str, int]]:
        """Images with a defined score, per metric and bucket (removal scores skip holes).
        Summed over ranks under DDP (a collective: call it on every rank)."""
        with self.sync_context():
            counts = self.counts.tolist()
        out = {}
        for name, row in zip(self.metric_names, counts, strict=True):
            per = dict(zip(self.bucket_names, row, strict=True))
            per[ALL] = sum(row)
            out[name] = per
        return out

    def counts_per_bucket(self) -> dict[str, int]:
        """Images per bucket, ``all`` and ``outside``; summed over ranks under DDP (a
        collective: call it on every rank)."""
        with self.sync_context():
            images, outside = self.images.tolist(), int(self.n_outside)
        out = dict(zip(self.bucket_names, images, strict=True))
        out[ALL] = sum(images)
        out["outside"] = outside
        return out

    def reset(self) -> None:
        super().reset()
        self._rows = []

    def rows(self) -> list[dict]:
        """This process's per-image rows, in update order."""
        return list(self._rows)

    def gather_rows(self) -> list[dict]:
        """Per-image rows of all ranks (collective: call on every rank), duplicates dropped."""
        rows = self._rows
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[list[dict] | None] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in (part or [])]
        seen, unique = set(), []
        for row in rows:
            if row["id"] is not None and row["id"] in seen:
                continue
            seen.add(row["id"])
            unique.append(row)
        return unique


def means_from_rows(
    rows: Sequence[Mapping], metric_names: Sequence[str], buckets: Sequence[Bucket] = PAPER_BUCKETS
) -> dict[str, dict[str, float]]:
    """The same nested means as ``BucketedMetrics.compute()``, from per-image rows."""
    names = [b.name for b in buckets]
    out = {}
    for metric in metric_names:
        per = {}
        for bname in [*names, ALL]:
            vals = [
                r[metric]
                for r in rows
                if r["bucket"] in names
                and (bname == ALL or r["bucket"] == bname)
                and not math.isnan(r[metric])
            ]
            per[bname] = math.fsum(vals) / len(vals) if vals else math.nan
        out[metric] = per
    return out
