"""Sampling time of ``prompt_mode: none`` against ``dual`` on the bench's tiny model (CPU).

With equal prompt states eq. 6 is one U-Net forward of size B (``dcgd.method.guidance``);
``dual`` runs 2B. Prints the median seconds per call of each mode, twice, alternating:

    OMP_NUM_THREADS=2 python experiments/none_mode_timing.py
"""

from __future__ import annotations

import statistics
import time

import torch

from dcgd.benchmarks.speed import Settings, build_module, example_batch


def main() -> None:
    settings = Settings()
    module = build_module(settings).eval()
    batch = example_batch(settings, torch.device("cpu"))
    pipeline = module.pipeline(use_ema=False)

    def seconds(mode: str, calls: int = 8) -> float:
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            pipeline(
                batch["source"], batch["mask"], batch["t_info"], batch["t_mask"],
                prompt_mode=mode, steps=settings.steps, ids=batch["id"], known_region="free",
            )  # fmt: skip
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])  # the first call warms up

    for mode in ("dual", "none", "dual", "none"):
        print(f"{mode}: {seconds(mode):.3f} s/call")


if __name__ == "__main__":
    main()
