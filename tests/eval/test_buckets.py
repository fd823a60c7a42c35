"""Bucket edges: a ratio exactly on an edge lands in one bucket, the same one everywhere
(the data module, the evaluator, the evaluate command), whatever the image size."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from dcgd.cli import main
from dcgd.data.buckets import BUCKET_NAMES, OUTSIDE, bucket_index, mask_bucket
from dcgd.eval.evaluator import Evaluator

# (height, width, edge): sizes where the edge is a whole number of pixels (>= 12 px a side
# for SSIM).
EXACT = [(40, 40, "0.1"), (40, 50, "0.3"), (100, 100, "0.01"), (20, 50, "0.2"), (20, 20, "0.4")]


def _mask(h: int, w: int, masked: int) -> np.ndarray:
    mask = np.zeros(h * w, np.uint8)
    mask[:masked] = 1
    return mask.reshape(h, w)


def _expected(edge: str) -> int:
    """Half-open [lo, hi): an edge belongs to the bucket it opens; 0.4 closes the last one."""
    opens = [name.split("-")[0] for name in BUCKET_NAMES]
    return opens.index(edge) if edge in opens else OUTSIDE


@pytest.mark.parametrize(("h", "w", "edge"), EXACT)
def test_an_exact_edge_lands_in_the_bucket_it_opens(h, w, edge):
    masked = int(Fraction(edge) * h * w)
    assert Fraction(masked, h * w) == Fraction(edge)  # truly on the edge
    expected = _expected(edge)
    assert bucket_index(masked, h * w) == expected
    assert bucket_index(masked - 1, h * w) == (expected - 1 if expected != OUTSIDE else 3)
    batch = torch.from_numpy(_mask(h, w, masked)).float()[None, None]
    assert mask_bucket(batch).tolist() == [expected]
    # The evaluator files it there when it computes the bucket from the mask itself.
    image = torch.zeros(1, 3, h, w)
    evaluator = Evaluator(lpips=())
    evaluator.update(image, image, batch)
    counts = evaluator.counts()
    name = BUCKET_NAMES[expected] if expected != OUTSIDE else "outside"
    assert counts[name] == 1
    assert sum(counts[b] for b in BUCKET_NAMES) + counts["outside"] == 1


def test_float_rounding_does_not_move_an_edge():
    # 0.1 + 0.2 != 0.3 in floats; pixel counts are compared as fractions, so 30% is 0.3-0.4.
    assert 0.1 + 0.2 > 0.3
    assert bucket_index(3, 10) == BUCKET_NAMES.index("0.3-0.4")
    assert bucket_index(1, 10) == BUCKET_NAMES.index("0.1-0.2")


def test_the_evaluate_command_uses_the_same_edges(workdir):
    size = 40
    folders = {name: workdir / name for name in ("pred", "target", "mask")}
    for folder in folders.values():
        folder.mkdir()
    rng = np.random.default_rng(0)
    # Exactly 10%, exactly 1% would need 16 px (0.01 * 1600): both edges, and 40% (outside).
    for name, masked in {"ten": 160, "one": 16, "forty": 640}.items():
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(folders["target"] / f"{name}.png")
        Image.fromarray(255 - image).save(folders["pred"] / f"{name}.png")
        Image.fromarray(_mask(size, size, masked) * 255).save(folders["mask"] / f"{name}.png")
    report = workdir / "report.json"
    argv = ["evaluate", *[f"--{k}={v}" for k, v in folders.items()], "--lpips=none"]
    # The 40% mask is in no bucket, so it is not scored: an error unless --allow-missing.
    assert main([*argv, f"--json={report}"]) == 2 and not report.exists()
    assert main([*argv, f"--json={report}", "--allow-missing"]) == 0
    payload = json.loads(report.read_text())
    assert payload["counts"]["0.1-0.2"] == 1
    assert payload["counts"]["0.01-0.1"] == 1
    assert payload["counts"]["outside"] == 1
    assert payload["problems"]["outside_buckets"] == {"forty": 0.4}
