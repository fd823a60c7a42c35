"""A study's trials, read back from MLflow, as a table and plots (``compare``, the notebook).

    comparison = load_comparison("dcgd-quickstart-ablation")       # latest study, or parent=
    comparison.table(rows="prompt_mode")   # one row per prompt mode: its best trial
    print(comparison.to_markdown(rows="trials"))
    comparison.plot("plots/")              # <metric>_vs_w.png, <metric>_per_bucket.png

Columns are ``<metric>/<bucket>`` as the sweep logged them; the best value of each column is
marked (bold in markdown, named in the CSV's last row), with the direction of
``dcgd.eval.metrics.higher_is_better``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from dcgd.errors import ConfigError, TrackingError
from dcgd.tracking.store import check_reachable, resolve_tracking_uri

# Parameters that are the same for every trial (logged for the record, not compared).
FIXED = {"checkpoint", "data_config", "split", "n_images", "function", "sampler_name"}
METRIC_ORDER = ("psnr", "ssim", "mae", "lpips_alex", "lpips_vgg")


def higher_is_better(metric: str, objective_direction: str = "minimize") -> bool:
    if metric == "objective":
        return objective_direction == "maximize"
    from dcgd.eval.metrics import higher_is_better as known

    try:
        return known(metric)
    except KeyError:
        return False  # unknown metrics (losses, errors) are taken as lower-is-better


def _bucket_key(bucket: str) -> tuple:
    if bucket == "all":
        return (1, math.inf)
    try:
        return (0, float(bucket.split("-")[0]))
    except ValueError:
        return (0, math.inf)


def _metric_key(column: str) -> tuple:
    metric, _, bucket = column.partition("/")
    rank = METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)
    return (rank, metric, _bucket_key(bucket))


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


@dataclass
class Comparison:
    """The COMPLETE trials of one study: one row each, params then metric columns."""

    frame: pd.DataFrame
    params: list[str]
    metrics: list[str]  # "<metric>/<bucket>" columns, then "objective"
    direction: str
    study: str
    parent_run_id: str

    # ------------------------------------------------------------------ tables
    def table(self, rows: str = "trials", metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """``rows="trials"``: every trial; ``rows=<param>``: the best trial per value of it."""
        columns = self._columns(metrics)
        frame = self.frame.sort_values("trial")
        if rows == "trials":
            keys = ["trial", *self.params]
            return frame[keys + columns].reset_index(drop=True)
        if rows not in self.frame.columns:
            raise ConfigError(
                f"--rows {rows}: the trials have no parameter {rows!r}; use trials or one of "
                f"{', '.join(self.params) or '(none)'}"
            )
        ascending = self.direction == "minimize"
        best = frame.sort_values("objective", ascending=ascending).groupby(rows, sort=False).head(1)
        keys = [rows, "trial", *[p for p in self.params if p != rows]]
        return best[keys + columns].sort_values(rows, key=_value_order).reset_index(drop=True)

    def _columns(self, metrics: Sequence[str] | None) -> list[str]:
        if not metrics:
            return list(self.metrics)
        wanted = set(metrics)
        chosen = [c for c in self.metrics if c.partition("/")[0] in wanted or c in wanted]
        if not chosen:
            raise ConfigError(
                f"--metrics {','.join(metrics)} matches no column; the trials have "
                f"{', '.join(sorted({c.partition('/')[0] for c in self.metrics}))}"
            )
        return chosen

    def best_rows(self, table: pd.DataFrame) -> dict[str, set[int]]:
        """Per metric column, the row positions holding its best value."""
        best = {}
        for column in table.columns:
            if column not in self.metrics:
                continue
            values = pd.to_numeric(table[column], errors="coerce")
            if values.notna().sum() == 0:
                continue
            metric = column.partition("/")[0]
            target = values.max() if higher_is_better(metric, self.direction) else values.min()
            best[column] = {i for i, v in enumerate(values) if v == target}
        return best

    def to_markdown(self, rows: str = "trials", metrics: Sequence[str] | None = None) -> str:
        table = self.table(rows, metrics)
        best = self.best_rows(table)
        header = [self._header(c) for c in table.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for i, row in enumerate(table.itertuples(index=False)):
            cells = []
            for column, value in zip(table.columns, row, strict=True):
                text = _fmt(column, value)
                cells.append(f"**{text}**" if i in best.get(column, ()) else text)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self, rows: str = "trials", metrics: Sequence[str] | None = None) -> str:
        """The table as CSV; its last row, ``best``, names the best row of each metric column."""
        table = self.table(rows, metrics)
        best = self.best_rows(table)
        label = table.columns[0]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(list(table.columns))
        for row in table.itertuples(index=False):
            writer.writerow(["" if _missing(v) else v for v in row])
        marks = ["best"]
        for column in table.columns[1:]:
            names = [str(table[label].iloc[i]) for i in sorted(best.get(column, ()))]
            marks.append(";".join(names))
        writer.writerow(marks)
        return out.getvalue()

    def _header(self, column: str) -> str:
        if column not in self.metrics:
            return column
        arrow = "↑" if higher_is_better(column.partition("/")[0], self.direction) else "↓"
        return f"{column} {arrow}"

    # ------------------------------------------------------------------ plots
    def plot(
        self, folder: str | Path, x: str = "w", group: str = "prompt_mode", bucket: str = "all"
    ) -> list[Path]:
        """``<metric>_vs_<x>.png`` (one line per ``group`` value) and ``<metric>_per_bucket.png``
        (bars per bucket, one per ``group`` value at its best trial). Returns the files."""
        import matplotlib

        matplotlib.use("Agg")  # files only; no display on a cluster node
        import matplotlib.pyplot as plt

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = sorted({c.partition("/")[0] for c in self.metrics if c != "objective"}, key=_order)
        written = []
        has_group = group in self.frame.columns
        if x in self.frame.columns and pd.to_numeric(self.frame[x], errors="coerce").notna().all():
            for metric in names:
                column = f"{metric}/{bucket}"
                if column not in self.frame.columns:
                    continue
                fig, ax = plt.subplots(figsize=(5, 3.5))
                groups = [("all trials", self.frame)]
                if has_group:
                    order = self.frame[group].drop_duplicates().sort_values(key=_value_order)
                    groups = [(v, self.frame[self.frame[group] == v]) for v in order]
                for value, part in groups:
                    part = part.assign(_x=pd.to_numeric(part[x])).sort_values("_x")
                    ax.plot(part["_x"], part[column], marker="o", label=str(value))
                ax.ticklabel_format(axis="y", useOffset=False)
                ax.set_xlabel(x)
                ax.set_ylabel(f"{metric} ({bucket}) {self._arrow(metric)}")
                ax.set_title(f"{self.study}: {metric} vs {x}")
                ax.legend(title=group if has_group else None, fontsize="small")
                ax.grid(alpha=0.3)
                written.append(_save(fig, folder / f"{metric}_vs_{x}.png"))
        table = self.table(group) if has_group else self.table("trials")
        label = group if has_group else "trial"
        for metric in names:
            columns = [c for c in self.metrics if c.partition("/")[0] == metric]
            buckets = [c.partition("/")[2] for c in columns]
            fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(buckets), 3.5))
            width = 0.8 / max(len(table), 1)
            for i, row in enumerate(table.itertuples(index=False)):
                row = dict(zip(table.columns, row, strict=True))
                offsets = [b + (i - (len(table) - 1) / 2) * width for b in range(len(buckets))]
                heights = [row[c] for c in columns]
                ax.bar(offsets, heights, width, label=str(row[label]))
            ax.set_xticks(range(len(buckets)), buckets)
            ax.set_xlabel("mask-ratio bucket")
            ax.set_ylabel(f"{metric} {self._arrow(metric)}")
            best = " (best trial per value)" if has_group else ""
            ax.set_title(f"{self.study}: {metric} per bucket{best}")
            ax.legend(title=label, fontsize="small")
            ax.grid(axis="y", alpha=0.3)
            written.append(_save(fig, folder / f"{metric}_per_bucket.png"))
        return written

    def _arrow(self, metric: str) -> str:
        return (
            "(higher is better)"
            if higher_is_better(metric, self.direction)
            else "(lower is better)"
        )


def _value_order(values: pd.Series) -> pd.Series:
    """Prompt modes in the paper's order (none, positive, negative, dual); others as they sort."""
    from dcgd.method.guidance import PROMPT_MODES

    if values.isin(PROMPT_MODES).all():
        return values.map(PROMPT_MODES.index)
    return values


def _order(metric: str) -> tuple:
    return _metric_key(f"{metric}/all")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(column: str, value) -> str:
    if _missing(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if column.startswith("psnr/") else f"{value:.4g}"
    return str(value)


def _value(text: str):
    """MLflow params are strings; give numbers back as numbers."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def latest_sweep_experiment(tracking_uri: str | None = None) -> str:
    """The name of the experiment holding the most recently started study (a sweep's parent
    run), over every experiment of the store."""
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    try:
        client = MlflowClient(uri)
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
        latest = client.search_runs(
            list(experiments),
            filter_string="tags.`dcgd.role` = 'study'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    except Exception as err:
        raise TrackingError(f"cannot read MLflow at {uri} ({type(err).__name__}: {err})") from None
    if not latest:
        raise ConfigError(
            f"no sweep in {uri}: none of its experiments holds a study. Run 'python -m dcgd "
            "sweep' first, or point --tracking-uri (or MLFLOW_TRACKING_URI) at its store"
        )
    return experiments[latest[0].info.experiment_id]


def load_comparison(
    experiment: str, parent: str | None = None, tracking_uri: str | None = None
) -> Comparison:
    """The COMPLETE trials of a study: ``parent`` is the study's parent run id or name; by
    default the most recently started study of the experiment."""
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    try:
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
    except Exception as err:
        raise TrackingError(f"cannot read MLflow at {uri} ({type(err).__name__}: {err})") from None
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(
            f"no MLflow experiment {experiment!r} in {uri}; it has: {', '.join(names) or 'none'} "
            "(set --tracking-uri or MLFLOW_TRACKING_URI to the store the sweep used)"
        )
    studies = _search(client, found.experiment_id, "tags.`dcgd.role` = 'study'")
    if not studies:
        raise ConfigError(f"experiment {experiment!r} holds no sweep (no study parent run)")
    if parent is None:
        chosen = max(studies, key=lambda r: r.info.start_time)
    else:
        matches = [r for r in studies if parent in (r.info.run_id, r.info.run_name)]
        if not matches:
            listed = ", ".join(f"{r.info.run_name} ({r.info.run_id})" for r in studies)
            raise ConfigError(f"--parent {parent}: no such study run; the experiment has {listed}")
        chosen = max(matches, key=lambda r: r.info.start_time)
    parent_id = chosen.info.run_id
    children = _search(client, found.experiment_id, f"tags.mlflow.parentRunId = '{parent_id}'")
    swept = [p for p in chosen.data.tags.get("dcgd.params", "").split(",") if p]
    records = []
    for run in children:
        tags = run.data.tags
        if tags.get("optuna.state") != "COMPLETE":
            continue
        record = {"trial": int(tags.get("optuna.trial", -1)), "run_id": run.info.run_id}
        record.update({k: _value(v) for k, v in run.data.params.items() if k not in FIXED})
        record.update(run.data.metrics)
        records.append(record)
    if not records:
        raise ConfigError(
            f"study {chosen.info.run_name!r} ({parent_id}) has no completed trial yet"
        )
    frame = pd.DataFrame.from_records(records)
    metrics = sorted((c for c in frame.columns if "/" in c), key=_metric_key)
    if "objective" in frame.columns:
        metrics.append("objective")
    params = [c for c in frame.columns if c not in metrics and c not in ("trial", "run_id")]
    # Swept parameters first; settings that never changed are left out of the table.
    varied = [p for p in params if p not in swept and frame[p].nunique(dropna=False) > 1]
    params = [p for p in swept if p in params] + varied
    return Comparison(
        frame=frame,
        params=params,
        metrics=metrics,
        direction=chosen.data.tags.get("dcgd.direction", "minimize"),
        study=chosen.info.run_name or chosen.data.tags.get("dcgd.study", ""),
        parent_run_id=parent_id,
    )
