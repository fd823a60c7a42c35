"""Tolerances for floats that two computations reach by different roads.

Other processes, thread counts, batch shapes, memory layouts and kernels (ATen's by CPU
capability, oneDNN's and MKL's by CPU family, and MKL's also by the alignment of the weights:
a pipeline loaded from safetensors reads them unaligned from a memory map) add the same terms
in another order. Each float32 operation then rounds differently, by ~6e-8 of its result, and a
network and a few sampling steps carry that further. So results of two roads agree to a
tolerance, never bit for bit; bitwise equality is for one road taken twice in one process.

Measured here (AMD EPYC) across ATEN_CPU_CAPABILITY=default/avx2/avx512, 1 or 2 threads and
oneDNN/MKL held to their AVX2 and compatible paths: sampled images in [-1, 1] (the tiny models,
3 steps) move by up to 7e-6, as much as jittering every weight by one float32 ulp moves them.
"""

from __future__ import annotations

import numpy as np
import torch

# On sampled images in [-1, 1]: ~150x the 7e-6 that rounding moves them by, and still 10x
# below what storing the weights in float16 would (1e-2); wrong weights, noise or prompts move
# them by 1e-1 and more.
SAMPLED_ATOL = 1e-3


def assert_close_to_scale(actual, expected, rel: float, msg: str | None = None) -> None:
    """Elementwise within ``rel`` of the largest magnitude in ``expected``.

    The rounding error of a sum (a matrix product, a gradient) scales with its terms, not with
    the result, which may cancel to near 0: an elementwise relative tolerance cannot hold for
    such elements, one relative to the tensor's scale does.
    """
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * scale, msg=msg)


def assert_same_8bit_image(actual: np.ndarray, expected: np.ndarray) -> None:
    """Two saved results of ``remove`` whose floats agree to rounding (``SAMPLED_ATOL``).

    At the model's resolution a float that close to a half level rounds either way: 1 level
    at most. The cubic resize to the window then adds up 16 such neighbours with weights whose
    magnitudes sum to 1.9 at most (OpenCV's a = -0.75): under 2 levels, 2 after rounding again.
    Wrong weights, noise or prompts move the filled pixels by tens of levels.
    """
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 2, f"{int((diff > 2).sum())} values more than 2 levels apart"
