"""``benchmark time-to-quality``: quality against wall time per sampler and step count."""

from __future__ import annotations

import json

import pytest

from dcgd.benchmarks.time_to_quality import Point, suggest
from dcgd.cli import main
from tests.training.tiny import fit_tiny_checkpoint


def _point(sampler: str, steps: int, seconds: float, mae: float, back: float = 0.0) -> Point:
    def stat(mean: float) -> dict[str, float]:
        return {"mean": mean, "lo": mean - 0.01, "hi": mean + 0.01}

    return Point(sampler, steps, seconds, stat(mae), stat(back), stat(20.0))


def test_the_suggestion_is_the_fastest_point_within_the_references_interval():
    points = [
        _point("ddim", 50, 1.0, 0.100),  # the reference: hole MAE interval [0.09, 0.11]
        _point("ddim", 4, 0.08, 0.150),  # fastest, but clearly worse
        _point("euler", 8, 0.16, 0.108),  # within the interval
        _point("dpmsolver++", 8, 0.15, 0.105, back=0.2),  # good fill, but the object returns
        _point("dpmsolver++", 16, 0.30, 0.095),
    ]
    chosen = suggest(points)
    assert (chosen.sampler, chosen.steps) == ("euler", 8)
    assert suggest(points[1:]) is None  # no reference measured: no suggestion


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return fit_tiny_checkpoint(tmp_path_factory.mktemp("ttq-ckpt"))


def test_the_command_measures_every_point_and_the_reference(checkpoint, tmp_path, capsys):
    out = tmp_path / "ttq"
    argv = ["benchmark", "time-to-quality", "--checkpoint", str(checkpoint), "--out", str(out),
            "--count", "2", "--batch-size", "2", "--steps", "1", "3", "--samplers", "ddim",
            "euler", "--resamples", "50"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    measured = {(p["sampler"], p["steps"]) for p in result["points"]}
    assert measured == {("ddim", 50), ("ddim", 1), ("ddim", 3), ("euler", 1), ("euler", 3)}
    for p in result["points"]:
        assert p["seconds_per_image"] > 0 and 0 <= p["hole_mae_mean"] <= 1
    times = {(p["sampler"], p["steps"]): p["seconds_per_image"] for p in result["points"]}
    assert times[("ddim", 50)] > times[("ddim", 1)]  # fifty U-Net calls cost more than one
    assert result["suggested"] is not None
    assert (out / "time_to_quality.png").stat().st_size > 10_000
    assert "(reference)" in (out / "table.md").read_text()
    assert main(argv) == 2  # a second run does not write over the first without --overwrite
    assert "--overwrite" in capsys.readouterr().err
