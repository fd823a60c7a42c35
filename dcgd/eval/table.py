"""The paper's Table 1 layout: rows metric x bucket, one column per method (or prompt mode).

``results`` is ``{method: {metric: {bucket: mean, ..., "all": mean}}}`` (what
``BucketedMetrics.compute()`` returns, one per method). Arrows give the better direction and
the best value of each row is marked (bold in markdown, named in the CSV's ``best`` column).
``counts`` adds an ``n`` column: either images per bucket (``{bucket: n}``) or images with a
defined score per metric and bucket (``{metric: {bucket: n}}``, right for removal scores,
which skip hole pairs).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence

from dcgd.eval.metrics import higher_is_better

Results = Mapping[str, Mapping[str, Mapping[str, float]]]
Counts = Mapping[str, int] | Mapping[str, Mapping[str, int]]


def _count(counts: Counts, metric: str, bucket: str) -> int | str:
    per = counts.get(metric) if isinstance(counts.get(metric), Mapping) else counts
    return per.get(bucket, "")


def _fmt(metric: str, value: float) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if metric in ("psnr", "fid") else f"{value:.4f}"


def _rows(results: Results) -> list[tuple[str, str, list[float], set[int]]]:
    """(metric, bucket, values per method, indices of the best methods) in table order."""
    methods = list(results)
    metrics: list[str] = []
    buckets: list[str] = []
    for per_method in results.values():
        for metric, per_bucket in per_method.items():
            if metric not in metrics:
                metrics.append(metric)
            for bucket in per_bucket:
                if bucket not in buckets:
                    buckets.append(bucket)
    rows = []
    for metric in metrics:
        for bucket in buckets:
            values = [results[m].get(metric, {}).get(bucket, math.nan) for m in methods]
            values = [math.nan if v is None else float(v) for v in values]
            finite = [v for v in values if not math.isnan(v)]
            if not finite:
                continue
            direction = higher_is_better(metric)
            if direction is None:  # unknown metric: no best
                best_idx: set[int] = set()
            else:
                best = max(finite) if direction else min(finite)
                best_idx = {i for i, v in enumerate(values) if v == best}
            rows.append((metric, bucket, values, best_idx))
    return rows


def _label(metric: str) -> str:
    direction = higher_is_better(metric)
    return metric if direction is None else f"{metric} {'↑' if direction else '↓'}"


def _direction(metric: str) -> str:
    direction = higher_is_better(metric)
    return "" if direction is None else ("higher" if direction else "lower")


def to_markdown(results: Results, counts: Counts | None = None) -> str:
    """A markdown table; ``counts`` adds an ``n`` column (see the module docstring)."""
    methods = list(results)
    header = ["metric", "bucket", *(["n"] if counts else []), *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric, bucket, values, best in _rows(results):
        cells = [_fmt(metric, v) for v in values]
        cells = [f"**{c}**" if i in best and len(methods) > 1 else c for i, c in enumerate(cells)]
        n = [str(_count(counts, metric, bucket))] if counts else []
        lines.append("| " + " | ".join([_label(metric), bucket, *n, *cells]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(results: Results, counts: Counts | None = None) -> str:
    """The same table as CSV: metric, direction, bucket, [n], one column per method, best."""
    methods = list(results)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["metric", "direction", "bucket", *(["n"] if counts else []), *methods, "best"])
    for metric, bucket, values, best in _rows(results):
        direction = _direction(metric)
        n = [_count(counts, metric, bucket)] if counts else []
        cells = ["" if math.isnan(v) else repr(v) for v in values]
        writer.writerow(
            [metric, direction, bucket, *n, *cells, ";".join(methods[i] for i in sorted(best))]
        )
    return out.getvalue()


def protocol_text(protocol: Mapping[str, str]) -> str:
    """The protocol as indented ``key: text`` lines, printed under every table."""
    return "protocol:\n" + "".join(f"  {k}: {v}\n" for k, v in protocol.items())


def rows_to_csv(rows: Sequence[Mapping]) -> str:
    """Per-image rows (``BucketedMetrics.gather_rows()``) as CSV, for the artifact."""
    if not rows:
        return ""
    fields = list(dict.fromkeys(key for row in rows for key in row))  # union, in first-seen order
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
