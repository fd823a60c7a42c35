"""``TableOneCallback``: the paper's Table 1 from ``python -m dcgd test``, logged to MLflow.

For every test batch it takes the model's samples (``test_step`` returns ``{"result": ...}``),
runs the configured baselines on the same batch, composites each prediction with the source
and scores it per image (``Evaluator``: PSNR, SSIM, MAE, LPIPS, removal scores) into one
``BucketedMetrics`` per column. At the end of the test epoch the per-bucket sums and counts
are reduced over all ranks, and rank 0 writes and logs:

- ``eval/table1.md`` / ``eval/table1.csv``: rows metric x bucket, one column per method,
  with the protocol and the image counts;
- ``eval/per_image.csv``: every image's scores, one row per (method, image);
- ``eval/grids/test.png``: source | mask | each column's composited result | target;
- MLflow metrics ``test/<column>/<metric>/<bucket>`` (``clip@1`` logged as ``clip_at_1``),
  and ``test/<metric>`` (overall, the model's column) through ``self.log``, so
  ``trainer.test`` returns them.

The files always land in ``<default_root_dir>/eval`` too, so a run without MLflow keeps them.

``python -m dcgd test`` adds it by default (``dcgd.cli.lightning``)::

    python -m dcgd test --config experiments/quickstart.yaml --ckpt_path last
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger

from dcgd.data.buckets import PAPER_BUCKETS, mask_bucket
from dcgd.errors import DCGDError
from dcgd.eval.baselines import InpaintingMethod, build_method
from dcgd.eval.bucketed import BucketedMetrics, means_from_rows
from dcgd.eval.evaluator import Evaluator
from dcgd.eval.metrics import warn_unavailable
from dcgd.eval.removal import ClipAtN, ObjectResidue
from dcgd.eval.table import protocol_text, rows_to_csv, to_csv, to_markdown
from dcgd.method.input import composite
from dcgd.tracking.mlflow import log_image

REMOVAL_SCORERS = ("residue", "clip")


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name (MLflow refuses '@')."""
    return "/".join(p.replace("@", "_at_") for p in parts)


def _describer_clip(datamodule: Any) -> Any:
    """The data module's CLIP describer (unwrapped from its cache), or None."""
    from dcgd.describe.clip_describer import ClipRegionDescriber

    describer = getattr(datamodule, "describer", None)
    while describer is not None and not isinstance(describer, ClipRegionDescriber):
        describer = getattr(describer, "describer", None)  # CachedDescriber wraps one
    return describer


class TableOneCallback(L.Callback):
    """Score the test set per mask-ratio bucket for the model and baselines; log Table 1.

    Args:
        baselines: methods run on the same batches, each a column: ``opencv_telea``,
            ``opencv_ns``, ``dcgd_<prompt mode>`` (the model under test sampled with that
            prompt mode; ``dcgd_none`` = no prompts), or the import path of a class (see
            ``dcgd.eval.baselines``). A ``dcgd_<mode>`` equal to the model's own mode is
            skipped (it is the model's column).
        lpips: LPIPS backbones (``alex``, ``vgg``); left out with a warning when the real
            ImageNet weights are not on disk and cannot be downloaded.
        lpips_weights_dir: folder holding torchvision's backbone files (default: the torch
            hub cache, ``$TORCH_HOME/hub/checkpoints``).
        removal: removal scores on paste pairs: ``residue`` (weight-free) and ``clip``
            (CLIP@N with ``clip_model``, else the data module's CLIP describer; left out with
            a warning when there is neither).
        clip_model / clip_pretrained: an open_clip model for CLIP@N (name + tag, or a
            directory saved by ``dcgd.describe.clip_model.save_clip``).
        clip_vocabulary / clip_scene_vocabulary / clip_templates: names ranked by CLIP@N
            when ``clip_model`` is given (files or names in ``dcgd/assets``).
        clip_top_n: the N of CLIP@N.
        grid_samples: test images shown in the logged grid.
        output_dir: where the files go (default ``<default_root_dir>/eval``).
    """

    def __init__(
        self,
        baselines: Sequence[str] = ("opencv_telea", "opencv_ns", "dcgd_none"),
        lpips: Sequence[str] = ("alex", "vgg"),
        lpips_weights_dir: str | None = None,
        removal: Sequence[str] = ("residue", "clip"),
        clip_model: str | None = None,
        clip_pretrained: str | None = None,
        clip_vocabulary: str = "imagenet_classes.txt",
        clip_scene_vocabulary: str | None = "categories_places365.txt",
        clip_templates: str = "simple_templates.txt",
        clip_top_n: Sequence[int] = (1, 3, 5),
        grid_samples: int = 8,
        output_dir: str | None = None,
    ) -> None:
        unknown = [r for r in removal if r not in REMOVAL_SCORERS]
        if unknown:
            raise DCGDError(
                f"unknown removal scores {unknown}; use any of {', '.join(REMOVAL_SCORERS)}"
            )
        self.baselines = list(baselines)
        self.lpips = list(lpips)
        self.lpips_weights_dir = lpips_weights_dir
        self.removal = list(removal)
        self.clip_source = (clip_model, clip_pretrained)
        self.clip_vocabularies = (clip_vocabulary, clip_scene_vocabulary, clip_templates)
        self.clip_top_n = list(clip_top_n)
        self.grid_samples = grid_samples
        self.output_dir = output_dir
        self.evaluator: Evaluator | None = None
        self.methods: list[InpaintingMethod] = []
        self.tables: dict[str, BucketedMetrics] = {}
        self.column = "model"
        self._grid: dict[str, list[torch.Tensor]] = {}
        self.results: dict[str, dict[str, dict[str, float]]] = {}  # after the epoch, all ranks
        self.active = True

    # ------------------------------------------------------------------ setup
    def _removal_scorers(self, trainer: L.Trainer) -> list:
        scorers: list = []
        if "residue" in self.removal:
            scorers.append(ObjectResidue())
        if "clip" in self.removal:
            clip = self._clip_at_n(trainer)
            if clip is not None:
                scorers.append(clip)
        return scorers

    def _clip_at_n(self, trainer: L.Trainer) -> ClipAtN | None:
        model, pretrained = self.clip_source
        if model is not None:
            from dcgd.describe.clip_model import load_clip
            from dcgd.describe.vocabulary import read_templates, read_vocabulary

            objects, scenes, templates = self.clip_vocabularies
            names = read_vocabulary(objects, "CLIP@N vocabulary")
            if scenes:
                names += read_vocabulary(scenes, "CLIP@N scene vocabulary")
            clip = load_clip(model, pretrained)
            return ClipAtN(clip, names, self.clip_top_n, read_templates(templates))
        describer = _describer_clip(getattr(trainer, "datamodule", None))
        if describer is None:
            warn_unavailable(
                "clip@N",
                "no CLIP to score with: set the callback's clip_model, or describe the data "
                "with dcgd.describe.clip_describer.ClipRegionDescriber",
            )
            return None
        return ClipAtN.from_describer(describer, self.clip_top_n)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # One table per run. LightningCLI puts the configured trainer.callbacks before its
        # defaults, so with a default one and one the user configured, the first is the user's.
        mine = [c for c in trainer.callbacks if isinstance(c, TableOneCallback)]
        self.active = mine[0] is self
        if not self.active:
            warnings.warn(
                f"{len(mine)} TableOneCallbacks are configured; only the first one runs",
                stacklevel=2,
            )
            self.evaluator, self.tables = None, {}
            return
        buckets = getattr(getattr(trainer, "datamodule", None), "buckets", None) or PAPER_BUCKETS
        self.evaluator = Evaluator(
            lpips=self.lpips,
            lpips_weights_dir=self.lpips_weights_dir,
            removal=self._removal_scorers(trainer),
            buckets=buckets,
        ).to(pl_module.device)
        hparams = getattr(pl_module, "hparams", None)
        mode = hparams.get("prompt_mode") if isinstance(hparams, Mapping) else None
        self.column = f"dcgd_{mode}" if mode else "model"
        self.methods = []
        for spec in self.baselines:
            pipeline = pl_module.pipeline() if hasattr(pl_module, "pipeline") else None
            method = build_method(spec, pipeline)
            if method.name != self.column and method.name not in [m.name for m in self.methods]:
                self.methods.append(method)
        self.tables = {
            name: self.evaluator.accumulator() for name in [self.column, *self._method_names()]
        }
        self._grid = {}
        self.results = {}

    def _method_names(self) -> list[str]:
        return [m.name for m in self.methods]

    # ------------------------------------------------------------------ per batch
    @torch.no_grad()
    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.active:
            return
        if not isinstance(outputs, Mapping) or "result" not in outputs:
            raise DCGDError(
                f"TableOneCallback needs {type(pl_module).__name__}.test_step to return "
                "{'result': prediction [B,3,H,W] in [-1,1]}; it returned "
                f"{type(outputs).__name__}"
            )
        evaluator = self.evaluator
        source, target, mask = batch["source"], batch["target"], batch["mask"]
        predictions = {self.column: outputs["result"]}
        for method in self.methods:
            predictions[method.name] = method(batch)
        bucket = mask_bucket(mask, evaluator.buckets)
        kinds = batch.get("kind")
        extra = {"kind": list(kinds)} if kinds is not None else None
        for name, pred in predictions.items():
            scores = evaluator.score(pred, target, mask, source, kinds)
            self.tables[name].update(
                scores, bucket, ids=batch.get("id"), ratios=batch.get("mask_ratio"), extra=extra
            )
        self._keep_for_grid(batch, predictions)

    def _keep_for_grid(self, batch: Mapping[str, Any], predictions: dict[str, torch.Tensor]):
        have = len(self._grid.get("source", []))
        take = min(self.grid_samples - have, batch["source"].shape[0])
        if take <= 0:
            return
        mask = (batch["mask"][:take] > 0.5).to(batch["source"].dtype)
        columns = {"source": batch["source"][:take], "mask": mask}
        for name, pred in predictions.items():
            columns[name] = composite(pred[:take], batch["source"][:take], mask)
        columns["target"] = batch["target"][:take]
        for name, images in columns.items():
            self._grid.setdefault(name, []).extend(images.detach().float().cpu())

    # ------------------------------------------------------------------ end of the test
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.evaluator is None or not self.tables:
            return
        names, buckets = self.evaluator.names, self.evaluator.buckets
        results, rows = {}, []
        counts: dict[str, int] = {}
        metric_counts: dict[str, dict[str, int]] = {}
        for column, table in self.tables.items():  # collectives: every rank runs this loop
            means = table.compute()
            column_counts = table.counts_per_bucket()
            column_metric_counts = table.counts_per_metric()
            column_rows = table.gather_rows()
            seen = column_counts["all"] + column_counts["outside"]
            if len(column_rows) != seen:
                # A padding DistributedSampler scored some images twice: the de-duplicated
                # rows give the exact means.
                warnings.warn(
                    f"{seen - len(column_rows)} test images were scored twice (the distributed "
                    "sampler pads the last batch); Table 1 uses each image once",
                    stacklevel=2,
                )
                means = means_from_rows(column_rows, names, buckets)
                column_counts, column_metric_counts = _counts_from_rows(
                    column_rows, names, [b.name for b in buckets]
                )
            results[column] = means
            if column == self.column:
                counts, metric_counts = column_counts, column_metric_counts
            rows += [{"method": column, **row} for row in column_rows]
        self.results = results
        for metric, per in results[self.column].items():
            pl_module.log(metric_key("test", metric), per["all"], sync_dist=True)
        if trainer.is_global_zero:
            self._write(trainer, results, counts, metric_counts, rows)

    def _write(
        self,
        trainer: L.Trainer,
        results: dict[str, dict[str, dict[str, float]]],
        counts: dict[str, int],
        metric_counts: dict[str, dict[str, int]],
        rows: list[dict],
    ) -> None:
        protocol = self.evaluator.protocol()
        markdown = (
            f"# Table 1: test set, per mask-ratio bucket (model column: {self.column})\n\n"
            + to_markdown(results, counts=metric_counts)
            + f"\nimages per bucket: {counts}\n"
            + f"grid columns: {' | '.join(self._grid) or '-'}\n\n"
            + protocol_text(protocol)
        )
        files = {
            "table1.md": markdown,
            "table1.csv": to_csv(results, counts=metric_counts),
            "per_image.csv": rows_to_csv(rows),
            "protocol.txt": protocol_text(protocol),
        }
        out = Path(self.output_dir or Path(trainer.default_root_dir) / "eval")
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text)
        grid = self._grid_image()
        if grid is not None:
            (out / "grids").mkdir(exist_ok=True)
            grid.save(out / "grids" / "test.png")
        print(f"\n{markdown}\ndcgd: Table 1 written to {out.resolve()}", flush=True)

        metrics = {
            metric_key("test", column, metric, bucket): value
            for column, per_metric in results.items()
            for metric, per_bucket in per_metric.items()
            for bucket, value in per_bucket.items()
            if math.isfinite(value)
        }
        for logger in trainer.loggers:
            if not isinstance(logger, MLFlowLogger):
                continue
            client, run_id = logger.experiment, logger.run_id
            for name, text in files.items():
                client.log_text(run_id, text, f"eval/{name}")
            if grid is not None:
                log_image(logger, grid, "eval/grids/test.png")
            logger.log_metrics(metrics, step=trainer.global_step)

    def _grid_image(self):
        if not self._grid or not self._grid.get("source"):
            return None
        from dcgd.tracking.images import image_grid

        return image_grid([torch.stack(images) for images in self._grid.values()])


def _counts_from_rows(
    rows: list[dict], metrics: Sequence[str], bucket_names: Sequence[str]
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Images per bucket and defined scores per metric and bucket, from per-image rows."""
    counts = {b: sum(r["bucket"] == b for r in rows) for b in bucket_names}
    counts["all"] = sum(counts.values())
    counts["outside"] = sum(r["bucket"] == "outside" for r in rows)
    per_metric = {}
    for metric in metrics:
        per = {
            b: sum(r["bucket"] == b and not math.isnan(r[metric]) for r in rows)
            for b in bucket_names
        }
        per["all"] = sum(per.values())
        per_metric[metric] = per
    return counts, per_metric
