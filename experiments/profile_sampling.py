"""Where dcgd's sampling time goes on this machine, and what compiling changes.

    OMP_NUM_THREADS=1 python experiments/profile_sampling.py

The tiny models of ``python -m dcgd bench`` (64 px, batch 2, 10 DDIM steps, dual). Prints a
``torch.profiler`` table of one eager call and one call of ``DCGDPipeline.compile()``, then
the seconds per call of three copies of the same pipeline timed in turn (A B C A B C ...):
eager, ``torch.compile`` of the U-Net with inductor's defaults, and ``DCGDPipeline.compile``
(U-Net and VAE, inductor with frozen weights), each with the largest difference from eager's
output. Figures in experiments/BENCHMARKS.md.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from dcgd.benchmarks.speed import Settings, build_module, example_batch
from dcgd.devices import resolve_device


def main() -> None:
    settings = Settings()
    device = resolve_device("cpu")
    module = build_module(settings).to(device).eval()
    batch = example_batch(settings, device)
    eager = module.pipeline(use_ema=False)
    plain_compile = copy.deepcopy(eager)
    plain_compile.unet = torch.compile(plain_compile.unet)
    pipelines = {
        "eager": eager,
        "torch.compile(unet)": plain_compile,
        "DCGDPipeline.compile()": copy.deepcopy(eager).compile(),
    }

    def sample(pipe) -> torch.Tensor:
        return pipe(
            batch["source"], batch["mask"], batch["t_info"], batch["t_mask"], prompt_mode="dual",
            w=settings.w, steps=settings.steps, ids=batch["id"], known_region="free",
        )  # fmt: skip

    outputs = {}
    for name, pipe in pipelines.items():
        start = time.perf_counter()
        outputs[name] = sample(pipe)  # compiles
        print(f"{name}: first call {time.perf_counter() - start:.1f} s")
    for name in ("eager", "DCGDPipeline.compile()"):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            sample(pipelines[name])
        print(f"\n{name}:")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(7):
        for name, pipe in pipelines.items():
            start = time.perf_counter()
            sample(pipe)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["eager"])
    for name, seconds in times.items():
        median = statistics.median(seconds)
        diff = (outputs[name] - outputs["eager"]).abs().max().item()
        print(f"{name}: {median:.3f} s/call, {median / base:.2f}x eager, max diff {diff:.1e}")


if __name__ == "__main__":
    main()
