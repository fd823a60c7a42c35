"""Where dcgd's sampling time goes on this machine, and what two switches change.

    OMP_NUM_THREADS=1 python experiments/profile_sampling.py

The tiny models of ``python -m dcgd bench`` (64 px, batch 2, 10 DDIM steps, dual): a
``torch.profiler`` table of one call, then seconds per call eager, with the U-Net in
channels-last, and compiled (inductor), each with the largest difference from eager's output.
Figures of 2026-12-03 in experiments/BENCHMARKS.md.
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from dcgd.benchmarks.speed import Settings, build_module, example_batch
from dcgd.devices import resolve_device


def seconds_per_call(fn, calls: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    settings = Settings()
    device = resolve_device("cpu")
    module = build_module(settings).to(device).eval()
    batch = example_batch(settings, device)
    sampler = module.pipeline(use_ema=False)

    def sample() -> torch.Tensor:
        return sampler(
            batch["source"], batch["mask"], batch["t_info"], batch["t_mask"], prompt_mode="dual",
            w=settings.w, steps=settings.steps, ids=batch["id"], known_region="free",
        )  # fmt: skip

    eager = seconds_per_call(sample)
    reference = sample()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        sample()
    print(profiler.key_averages().table(sort_by="cpu_time_total", row_limit=12))
    print(f"eager: {eager:.3f} s/call")

    module.unet.to(memory_format=torch.channels_last)
    seconds = seconds_per_call(sample)
    diff = (sample() - reference).abs().max().item()
    print(f"channels_last: {seconds:.3f} s/call, {seconds / eager:.2f}x eager, max diff {diff:.1e}")
    module.unet.to(memory_format=torch.contiguous_format)

    sampler.unet = torch.compile(module.unet)
    start = time.perf_counter()
    sample()
    compile_s = time.perf_counter() - start
    seconds = seconds_per_call(sample)
    diff = (sample() - reference).abs().max().item()
    print(
        f"torch.compile: {seconds:.3f} s/call, {seconds / eager:.2f}x eager, max diff {diff:.1e} "
        f"({compile_s:.0f} s to compile)"
    )


if __name__ == "__main__":
    main()
