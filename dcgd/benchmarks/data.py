"""Data engine throughput next to the quick-start U-Net step: is the GPU (or CPU) ever waiting?

    python -m dcgd.benchmarks.data [--sizes 256 512] [--workers 0 2] [--batches 8] [--threads 1]

For each source, size and worker count it times the InpaintingDataModule's training loader
(random crops, mask generation, object pasting: ``paste_probability`` 0.5) in samples/s,
after a first batch that pays for worker start-up. Sources:

- ``places-like``: a folder of JPEG photographs laid out like Places365 (256x256 files for
  256 px, short side 512 for 512 px), cut from the photos shipped in scikit-image /
  scikit-learn: the decode + crop path real data takes;
- ``procedural``: the built-in scenes (rendered, no decode).

Then one training step (eq. 7 forward, backward, Adam) of the quick-start model on a
quick-start batch (``experiments/quickstart.yaml``: pixel space, U-Net [16, 32, 64], tiny
text tower, 64 px, batch 8). A loader keeps up when samples/s >= batch / step time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from dcgd.data.datamodule import InpaintingDataModule
from dcgd.data.images import random_crop, resize_short_side
from dcgd.data.photos import available_photos, load_photo

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"


def places_like_folder(folder: Path, size: int, count: int = 48) -> Path:
    """``count`` JPEGs (quality 90) like Places365: ``size``-square for 256, short side 512 else."""
    rng = np.random.default_rng(0)
    names = available_photos()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = load_photo(names[i % len(names)])
        if size <= 256:
            image = random_crop(photo, size, rng)
        else:
            image = resize_short_side(photo, size)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def loader_throughput(dm: InpaintingDataModule, batches: int) -> float:
    """Samples per second of the training loader, the first batch (start-up) left out."""
    dm.setup("fit")
    iterator = iter(dm.train_dataloader())
    next(iterator)
    start = time.perf_counter()
    samples = 0
    for _ in range(batches):
        samples += len(next(iterator)["id"])
    return samples / (time.perf_counter() - start)


def quickstart_step_time(steps: int) -> tuple[float, int]:
    """Median seconds of one quick-start training step, and the batch size."""
    from dcgd.describe.base import LabelDescriber, attach_descriptions
    from dcgd.training.module import DCGDModule

    config = yaml.safe_load(QUICKSTART.read_text())
    module = DCGDModule(**config["model"]["init_args"])
    data = dict(config["data"]["init_args"])
    data.pop("describer", None)
    dm = InpaintingDataModule(**data)
    dm.setup("fit")
    batch = attach_descriptions(next(iter(dm.train_dataloader())), LabelDescriber())
    optimizer = module.configure_optimizers()
    module.train()
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = module.diffusion_loss(batch, torch.Generator().manual_seed(step))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), len(batch["id"])  # step 0 warms up


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average (1/5/15 min) {load}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcgd.benchmarks.data", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--sources", nargs="+", default=["places-like", "procedural"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per setting")
    parser.add_argument("--steps", type=int, default=10, help="timed U-Net steps")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads of this process (default: torch's choice); 1 is fairer "
        "on a machine others are using, where idle-spinning threads wait for a core",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"machine: {machine()}")
    print("\n| source | size | workers | samples/s | ms/sample |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for source in args.sources:
            for size in args.sizes:
                kwargs = dict(size=size, batch_size=args.batch_size, paste_probability=0.5)
                length = args.batch_size * (args.batches + 2)  # one epoch covers the timing
                if source == "places-like":
                    root = places_like_folder(Path(tmp) / f"places-{size}", size, length)
                    kwargs.update(dataset="folder", root=str(root))
                else:
                    kwargs.update(dataset=source, train_length=length)
                for workers in args.workers:
                    dm = InpaintingDataModule(
                        **kwargs, num_workers=workers, persistent_workers=False
                    )
                    rate = loader_throughput(dm, args.batches)
                    print(f"| {source} | {size} | {workers} | {rate:.1f} | {1000 / rate:.1f} |")
    step, batch = quickstart_step_time(args.steps)
    print(
        f"\nquick-start U-Net training step (batch {batch}, 64 px): {1000 * step:.0f} ms "
        f"= {batch / step:.1f} samples/s needed from the loader"
    )
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
