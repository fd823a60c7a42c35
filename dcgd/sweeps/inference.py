"""Inference trials: one trained checkpoint, sampled with each trial's ``w`` / ``prompt_mode``.

    kind: inference
    inference:
      checkpoint: runs/quickstart/checkpoints/last.ckpt   # or --checkpoint
      data_config: null     # default: the config.yaml that fit saved beside the checkpoints
      data: {val_per_bucket: 4}   # overrides of the data module's init_args
      split: val            # val or test: the fixed, seeded evaluation sets
      steps: null           # sampling steps (default: the checkpoint's, its val_steps)
      lpips: [alex]         # LPIPS backbones; left out (with a warning) without weights
      lpips_weights: null
      device: auto
      grid_samples: 8
      compile: false        # DCGDPipeline.compile(): each batch shape compiles once per
                            # worker (tens of seconds on a CPU), then every trial samples faster

The data and the model's inference pipeline (``dcgd.sampling.pipeline``, no Lightning) are
loaded once per worker, a second pipeline only when a trial asks for ``use_ema: false``; each
trial samples the whole evaluation set with eq. 6 and scores it per mask-ratio bucket with
``dcgd.eval.Evaluator``. The data module's loaders describe the batches (``t_info`` /
``t_mask``) themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dcgd.checkpoints import load_checkpoint
from dcgd.data.config import build_datamodule
from dcgd.devices import resolve_device
from dcgd.errors import ConfigError
from dcgd.files import read_yaml
from dcgd.sampling.pipeline import DCGDPipeline, load_pipeline
from dcgd.sweeps.runner import TrialContext, TrialResult
from dcgd.sweeps.spec import SweepSpec

if TYPE_CHECKING:
    from dcgd.data.datamodule import InpaintingDataModule

SETTINGS = (
    "checkpoint",
    "data_config",
    "data",
    "split",
    "steps",
    "lpips",
    "lpips_weights",
    "device",
    "grid_samples",
    "compile",
)


def find_data_config(checkpoint: Path) -> Path:
    """The resolved config ``fit`` saved in the run directory (``<root>/config.yaml``)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise ConfigError(
        f"no config.yaml beside {checkpoint} (fit saves one in its default_root_dir); give the "
        "fit config with inference.data_config"
    )


def read_datamodule(config_path: Path, overrides: dict[str, Any]) -> InpaintingDataModule:
    """The ``data:`` section of a fit config, instantiated with ``overrides`` on its init_args."""
    config = read_yaml(config_path, "data config") or {}
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or "class_path" not in data:
        raise ConfigError(f"{config_path} has no data: {{class_path: ...}} section")
    data = {"class_path": data["class_path"], "init_args": dict(data.get("init_args") or {})}
    where = f"the data config of {config_path} (with inference.data {overrides}) is invalid"
    return build_datamodule(data, overrides, where=where)


class InferenceTrials:
    def __init__(self, spec: SweepSpec, checkpoint: str | Path | None = None) -> None:
        settings = dict(spec.inference)
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise ConfigError(
                f"inference: unknown field(s) {sorted(unknown)}; known: {', '.join(SETTINGS)}"
            )
        checkpoint = checkpoint or settings.get("checkpoint")
        if not checkpoint:
            raise ConfigError("an inference sweep needs a checkpoint: --checkpoint PATH.ckpt")
        self.spec = spec
        self.checkpoint = Path(checkpoint)
        self.settings = settings
        self.split = settings.get("split", "val")
        if self.split not in ("val", "test"):
            raise ConfigError(f"inference.split must be val or test, got {self.split!r}")
        self.compile = settings.get("compile", False)
        if not isinstance(self.compile, bool):
            raise ConfigError(f"inference.compile must be true or false, got {self.compile!r}")
        self.pipelines: dict[bool, DCGDPipeline] = {}  # use_ema -> pipeline, loaded on use
        self.datamodule = None
        self.evaluator = None

    def prepare(self) -> None:
        from dcgd.eval.evaluator import Evaluator
        from dcgd.eval.metrics import LEFT_OUT

        if not self.checkpoint.is_file():
            raise ConfigError(
                f"checkpoint {self.checkpoint} does not exist; give a .ckpt from fit with "
                "--checkpoint"
            )
        load_checkpoint(self.checkpoint)  # a damaged or code-running file: refused before work
        data_config = self.settings.get("data_config")
        config_path = Path(data_config) if data_config else find_data_config(self.checkpoint)
        if not config_path.is_file():
            raise ConfigError(f"inference.data_config {config_path} does not exist")
        self.data_config = config_path
        self.datamodule = read_datamodule(config_path, dict(self.settings.get("data") or {}))
        buckets = [b.name for b in self.datamodule.buckets]
        lpips = list(self.settings.get("lpips") or [])
        probe = ["psnr", "ssim", "mae", *[f"lpips_{n}" for n in lpips]]
        self.spec.objective.check(probe, buckets, "an inference trial")
        device = self.settings.get("device")
        self.device = resolve_device(
            None if device is None else str(device), option="inference.device"
        )
        self.pipeline(use_ema=True)  # the default one now: a model that cannot load fails here
        self.evaluator = Evaluator(
            lpips=lpips,
            lpips_weights_dir=self.settings.get("lpips_weights"),
            buckets=self.datamodule.buckets,
        ).to(self.device)
        for term in self.spec.objective.terms:
            if term.metric not in self.evaluator.names:
                raise ConfigError(
                    f"the objective needs {term.metric}, which is unavailable here: "
                    f"{LEFT_OUT.get(term.metric, 'not computed')}"
                )
        self.datamodule.setup("validate" if self.split == "val" else "test")
        self.n_images = len(self.datamodule.dataset(self.split))

    def pipeline(self, use_ema: bool = True) -> DCGDPipeline:
        """The checkpoint's pipeline on the trial device, loaded once per ``use_ema`` value."""
        if use_ema not in self.pipelines:
            pipeline = load_pipeline(self.checkpoint, use_ema=use_ema).to(self.device)
            self.pipelines[use_ema] = pipeline.compile() if self.compile else pipeline
        return self.pipelines[use_ema]

    def fixed_params(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "data_config": str(self.data_config),
            "split": self.split,
            "n_images": self.n_images,
        }

    def _batches(self):
        """The evaluation split's batches on the trial device, described by the loader."""
        loader = (
            self.datamodule.val_dataloader()
            if self.split == "val"
            else self.datamodule.test_dataloader()
        )
        for batch in loader:
            batch = self.datamodule.record_skipped(batch)
            yield {
                k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }

    @torch.no_grad()
    def run(self, params: dict[str, Any], context: TrialContext | None = None) -> TrialResult:
        from dcgd.tracking.images import removal_grid

        pipeline = self.pipeline(use_ema=bool(params.get("use_ema", True)))
        defaults = pipeline.settings
        settings = {
            "prompt_mode": params.get("prompt_mode", defaults.prompt_mode),
            "w": float(params.get("w", defaults.w)),
            "steps": int(params.get("steps", self.settings.get("steps") or defaults.steps)),
            "seed": int(params.get("seed", defaults.seed)),
        }
        self.evaluator.reset()
        image = None
        for batch in self._batches():
            if "t_info" not in batch:
                raise ConfigError(
                    f"the data of {self.data_config} has no describer, so batches carry no "
                    "prompts; set data.init_args.describer in that config"
                )
            result = pipeline(
                batch["source"],
                batch["mask"],
                batch["t_info"],
                batch["t_mask"],
                ids=batch.get("id"),
                sampler=params.get("sampler"),
                **settings,
            )
            self.evaluator.update(
                result,
                batch["target"],
                batch["mask"],
                source=batch["source"],
                bucket=batch["bucket"],
                ids=batch.get("id"),
                ratios=batch.get("mask_ratio"),
                kinds=batch.get("kind"),
            )
            if image is None:
                image = removal_grid(batch, result, int(self.settings.get("grid_samples", 8)))
        return TrialResult(self.evaluator.compute(), image, settings)
