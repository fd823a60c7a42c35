"""Time to quality: how long a removal takes at each sampler and step count, and how good it is.

Users choose a removal tool by how long they wait for a good result, not by the time per step.
On the repeated-object cases of ``dcgd.eval.repeated_objects`` (the removal benchmark's, the
same scenes and masks), every (sampler, steps) point samples all cases with the model's prompt
mode and ``w`` and records seconds per image (median over batches, after one warm-up batch) next
to the hole MAE and the reappearance rate, each with a bootstrap 95% interval. The reference is
50-step DDIM. The suggested default is the fastest point whose hole MAE and reappearance are
within the reference's interval (no worse than the reference can be told apart from on these
cases).

    python -m dcgd benchmark time-to-quality --checkpoint C --out DIR
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REFERENCE = ("ddim", 50)
DEFAULT_SAMPLERS = ("ddim", "dpmsolver++", "euler", "ddpm")
DEFAULT_STEPS = (2, 4, 8, 16, 25, 50)


@dataclass
class Point:
    """One (sampler, steps) measurement."""

    sampler: str
    steps: int
    seconds_per_image: float
    hole_mae: dict[str, float]  # mean, lo, hi
    reappeared: dict[str, float]
    hole_psnr: dict[str, float]

    def row(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "steps": self.steps,
            "seconds_per_image": self.seconds_per_image,
            **{f"hole_mae_{k}": v for k, v in self.hole_mae.items()},
            **{f"reappeared_{k}": v for k, v in self.reappeared.items()},
            **{f"hole_psnr_{k}": v for k, v in self.hole_psnr.items()},
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_batch(pipe: Any, batch: dict, **settings: Any) -> torch.Tensor:
    """The pipeline's fill of a case batch (``repeated_objects.case_batch``): its sources,
    masks, descriptions and ids, with the sampling ``settings`` (sampler, steps, w, ...)."""
    return pipe(
        batch["source"],
        batch["mask"],
        t_info=batch["t_info"],
        t_mask=batch["t_mask"],
        ids=batch["id"],
        **settings,
    )


def measure(
    pipe: Any,
    cases: Sequence[Any],
    batches: Sequence[Sequence[Any]],
    tensors: Sequence[dict],
    points: Sequence[tuple[str, int]],
    indices: np.ndarray,
    seed: int = 0,
    progress: Any = None,
) -> list[Point]:
    """Sample every case at each (sampler, steps) in ``points`` and score it."""
    from dcgd.eval import repeated_objects as bench

    def sample(batch: dict, sampler: str, steps: int) -> torch.Tensor:
        return sample_batch(pipe, batch, sampler=sampler, steps=steps, seed=seed)

    results = []
    for sampler, steps in points:
        sample(tensors[0], sampler, steps)  # warm-up: scheduler set-up, allocator, caches
        per_image, rows = [], []
        for chunk, batch in zip(batches, tensors, strict=True):
            _sync(pipe.device)
            start = time.perf_counter()
            pred = sample(batch, sampler, steps)
            _sync(pipe.device)
            per_image.append((time.perf_counter() - start) / len(chunk))
            rows += bench.score(chunk, batch, pred.cpu())
            if progress is not None:
                progress.update(len(chunk))
        results.append(
            Point(
                sampler,
                steps,
                statistics.median(per_image),
                *(bench.bootstrap([r[m] for r in rows], indices) for m in _MEASURES),
            )
        )
    return results


_MEASURES = ("hole_mae", "reappeared", "hole_psnr")


def suggest(points: Sequence[Point]) -> Point | None:
    """The fastest point no worse than the reference beyond its own interval: hole MAE at most
    the reference's upper bound and reappearance at most its upper bound."""
    reference = next((p for p in points if (p.sampler, p.steps) == REFERENCE), None)
    if reference is None:
        return None
    good = [
        p
        for p in points
        if p.hole_mae["mean"] <= reference.hole_mae["hi"]
        and p.reappeared["mean"] <= reference.reappeared["hi"]
    ]
    return min(good, key=lambda p: p.seconds_per_image)


def to_markdown(settings: dict[str, Any], points: Sequence[Point], chosen: Point | None) -> str:
    def cell(stat: dict[str, float], digits: int = 3) -> str:
        return f"{stat['mean']:.{digits}f} [{stat['lo']:.{digits}f}, {stat['hi']:.{digits}f}]"

    reference = next((p for p in points if (p.sampler, p.steps) == REFERENCE), None)
    lines = [
        f"# Time to quality: {settings['checkpoint']}",
        "",
        f"{settings['count']} repeated-object cases at {settings['size']} px (case seed "
        f"{settings['case_seed']}), prompt mode {settings['prompt_mode']}, w {settings['w']:g}, "
        f"on {settings['device']} ({settings['machine']}). Seconds per image: median over "
        f"batches of {settings['batch_size']} after a warm-up batch. Mean [bootstrap 95% "
        "interval].",
        "",
        "| sampler | steps | s / image | x reference time | hole MAE | reappeared | hole PSNR |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p.sampler, p.steps)):
        ratio = p.seconds_per_image / reference.seconds_per_image if reference else float("nan")
        mark = " **(suggested)**" if p is chosen else ""
        mark += " (reference)" if (p.sampler, p.steps) == REFERENCE else ""
        lines.append(
            f"| {p.sampler}{mark} | {p.steps} | {p.seconds_per_image:.4f} | {ratio:.2f} | "
            f"{cell(p.hole_mae)} | {cell(p.reappeared, 2)} | {cell(p.hole_psnr, 1)} |"
        )
    lines.append("")
    if chosen is None:
        lines.append("No suggestion: the reference (50-step DDIM) was not measured.")
    else:
        lines.append(
            f"Suggested: {chosen.sampler}, {chosen.steps} steps: the fastest point whose hole "
            "MAE and reappearance are within the reference's 95% interval "
            f"({chosen.seconds_per_image / reference.seconds_per_image:.2f}x its time)."
        )
    return "\n".join(lines) + "\n"


def plot(points: Sequence[Point], chosen: Point | None) -> Figure:
    """Hole MAE against seconds per image, one line per sampler, steps written at each point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=110)
    for sampler in dict.fromkeys(p.sampler for p in points):
        line = sorted((p for p in points if p.sampler == sampler), key=lambda p: p.steps)
        xs = [p.seconds_per_image for p in line]
        ys = [p.hole_mae["mean"] for p in line]
        errors = [
            [p.hole_mae["mean"] - p.hole_mae["lo"] for p in line],
            [p.hole_mae["hi"] - p.hole_mae["mean"] for p in line],
        ]
        axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=2, label=sampler)
        for p in line:
            axis.annotate(str(p.steps), (p.seconds_per_image, p.hole_mae["mean"]),
                          textcoords="offset points", xytext=(4, 4), fontsize=7)  # fmt: skip
    reference = next((p for p in points if (p.sampler, p.steps) == REFERENCE), None)
    if reference is not None:
        axis.axhspan(reference.hole_mae["lo"], reference.hole_mae["hi"], color="grey",
                     alpha=0.15, label="50-step DDIM, 95% interval")  # fmt: skip
    if chosen is not None:
        axis.scatter([chosen.seconds_per_image], [chosen.hole_mae["mean"]], s=160,
                     facecolors="none", edgecolors="black", label="suggested")  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("seconds per image (log scale)")
    axis.set_ylabel("hole MAE (lower is better)")
    axis.set_title("Time to quality (numbers: sampling steps)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
