"""Composite, score and accumulate: the one object a test loop or the CLI updates per batch.

evaluator = Evaluator(lpips=("alex", "vgg"))          # left-out metrics are warned about
evaluator.to(device)
for batch, pred in ...:
    evaluator.update(pred, batch["target"], batch["mask"], source=batch["source"],
                     bucket=batch["bucket"], ids=batch["id"], ratios=batch["mask_ratio"],
                     kinds=batch["kind"])
means = evaluator.compute()      # {metric: {bucket: mean, "all": mean}}, DDP-reduced
rows = evaluator.gather_rows()   # per-image rows of every rank, for the CSV artifact

Several methods on the same images (a Table-1 with one column per method): score each with
``evaluator.score(...)`` and keep one ``evaluator.accumulator()`` per method.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from dcgd.data.buckets import PAPER_BUCKETS, Bucket, mask_bucket
from dcgd.eval.bucketed import BucketedMetrics
from dcgd.eval.metrics import LEFT_OUT, PROTOCOL, check_range, load_lpips, mae, psnr, ssim
from dcgd.method.input import composite


class Evaluator:
    """Table-1 metrics (psnr, ssim, mae, lpips_<net>) plus optional removal scorers.

    ``removal``: scorers with ``names`` and ``__call__(source, result, mask) -> {name: [B]}``
    (``dcgd.eval.removal``); they run only when a source is given, and give NaN (skipped in
    the means) for images of kind ``"hole"``, which hold no object.
    """

    def __init__(
        self,
        lpips: Sequence[str] = ("alex", "vgg"),
        lpips_weights_dir: str | Path | None = None,
        allow_download: bool | None = None,
        removal: Sequence = (),
        buckets: Sequence[Bucket] = PAPER_BUCKETS,
    ) -> None:
        self.lpips = {}
        for net in lpips:
            scorer = load_lpips(net, lpips_weights_dir, allow_download)
            if scorer is not None:
                self.lpips[scorer.key] = scorer
        self.removal = list(removal)
        self.requested_lpips = [f"lpips_{net}" for net in lpips]
        self.names = ["psnr", "ssim", "mae", *self.lpips]
        self.names += [name for scorer in self.removal for name in scorer.names]
        self.buckets = tuple(buckets)
        self.bucketed = BucketedMetrics(self.names, self.buckets)

    def to(self, device: torch.device | str) -> Evaluator:
        for scorer in [*self.lpips.values(), *self.removal]:
            if callable(getattr(scorer, "to", None)):
                scorer.to(device)
        self.bucketed.to(device)
        return self

    def accumulator(self) -> BucketedMetrics:
        """A fresh per-bucket accumulator for this evaluator's metrics (one per method)."""
        return BucketedMetrics(self.names, self.buckets).to(self.bucketed.device)

    @torch.no_grad()
    def score(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        source: torch.Tensor | None = None,
        kinds: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-image scores (``{name: [B]}``) of the composited prediction.

        Without ``source`` the composite takes the target outside the mask, which is the same
        thing for hole pairs and for any source whose known region is the target's.
        """
        check_range(target, "target")
        if source is not None:
            check_range(source, "source")
        mask = (mask > 0.5).to(pred.dtype)
        result = composite(pred, target if source is None else source, mask)
        scores = {
            "psnr": psnr(result, target),
            "ssim": ssim(result, target),
            "mae": mae(result, target),
        }
        for key, scorer in self.lpips.items():
            scores[key] = scorer(result, target)
        if source is not None:
            for scorer in self.removal:
                for name, values in scorer(source, result, mask).items():
                    values = values.to(pred.device, torch.float32)
                    if kinds is not None:
                        hole = torch.tensor([k == "hole" for k in kinds], device=values.device)
                        values = values.masked_fill(hole, float("nan"))
                    scores[name] = values
        return {k: v.float() for k, v in scores.items()}

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        source: torch.Tensor | None = None,
        bucket: torch.Tensor | None = None,
        ids: Sequence[str] | None = None,
        ratios: torch.Tensor | Sequence[float] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Score a batch and add it to the per-bucket sums; returns the per-image scores.
        ``bucket`` / ``ratios`` are computed from the mask when not given."""
        scores = self.score(pred, target, mask, source, kinds)
        if bucket is None:
            bucket = mask_bucket(mask, self.buckets)
        if ratios is None:
            ratios = (mask > 0.5).flatten(1).float().mean(dim=1)
        extra = {"kind": list(kinds)} if kinds is not None else None
        self.bucketed.update(scores, bucket, ids=ids, ratios=ratios, extra=extra)
        return scores

    def compute(self) -> dict[str, dict[str, float]]:
        return self.bucketed.compute()

    def counts(self) -> dict[str, int]:
        return self.bucketed.counts_per_bucket()

    def counts_per_metric(self) -> dict[str, dict[str, int]]:
        return self.bucketed.counts_per_metric()

    def gather_rows(self) -> list[dict]:
        return self.bucketed.gather_rows()

    def reset(self) -> None:
        self.bucketed.reset()

    def protocol(self) -> dict[str, str]:
        """The protocol of the metrics actually reported, plus what was left out and why."""
        out = {k: v for k, v in PROTOCOL.items() if k != "lpips" or self.lpips}
        for scorer in self.removal:
            text = getattr(scorer, "protocol", None) or (scorer.__doc__ or "").strip()
            for name in scorer.names:
                out[name] = text.splitlines()[0] if text else type(scorer).__name__
        for name in self.requested_lpips:
            if name not in self.lpips:
                out[f"{name} (left out)"] = LEFT_OUT.get(name, "pretrained weights unavailable")
        return out
