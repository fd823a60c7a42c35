"""Evaluation: the paper's Table 1 metrics per mask-ratio bucket, removal metrics, baselines.

- ``metrics``: composite, per-image PSNR / SSIM / MAE / LPIPS (and FID when its weights exist),
  with the protocol stated in ``PROTOCOL``; missing pretrained weights leave a metric out.
- ``bucketed``: ``BucketedMetrics``, a torchmetrics ``Metric`` of per-bucket sums and counts.
- ``evaluator``: ``Evaluator``, composite + score + accumulate, one call per batch.
- ``removal``: does the removed object come back? (CLIP@N, object residue).
- ``table``: the Table-1-style table as markdown and CSV.
- ``baselines``: the ``InpaintingMethod`` interface, OpenCV Telea / Navier-Stokes, and the
  DCGD model under another prompt mode (``dcgd_none``).
- ``lightning``: ``TableOneCallback``, Table 1 from ``python -m dcgd test``, logged to MLflow.
"""
