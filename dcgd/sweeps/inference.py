"""Inference trials: one trained checkpoint, sampled with each trial's ``w`` / ``prompt_mode``.

    kind: inference
    inference:
      checkpoint: runs/quickstart/checkpoints/last.ckpt   # or --checkpoint
      data_config: null     # default: the config.yaml that fit saved beside the checkpoints
      data: {val_per_bucket: 4}   # overrides of the data module's init_args
      split: val            # val or test: the fixed, seeded evaluation sets
      steps: null           # sampling steps (default: the model's val_steps)
      lpips: [alex]         # LPIPS backbones; left out (with a warning) without weights
      lpips_weights: null
      device: auto
      grid_samples: 8

The model and data are loaded once per worker; each trial samples the whole evaluation set
with eq. 6 and scores it per mask-ratio bucket with ``dcgd.eval.Evaluator``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import lightning as L
import torch

from dcgd.checkpoints import load_checkpoint
from dcgd.errors import ConfigError, DCGDError, ModelLoadError
from dcgd.files import read_yaml
from dcgd.sweeps.runner import TrialContext, TrialResult
from dcgd.sweeps.spec import SweepSpec

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


def load_module(checkpoint: Path, device: torch.device):
    """The LightningModule saved in a Lightning checkpoint, in eval mode on ``device``."""
    if not checkpoint.is_file():
        raise ConfigError(
            f"checkpoint {checkpoint} does not exist; give a .ckpt from fit with --checkpoint"
        )
    saved = load_checkpoint(checkpoint)  # refuses a file that would run code, in one line
    hparams = saved.get("hyper_parameters")
    hparams = hparams if isinstance(hparams, dict) else {}
    class_path = hparams.get("_class_path", "dcgd.training.module.DCGDModule")
    # The class is named by the file: import only dcgd's own LightningModules from it.
    module_name, _, name = str(class_path).rpartition(".")
    cls = None
    if module_name == "dcgd" or module_name.startswith("dcgd."):
        try:
            cls = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise ModelLoadError(
            f"{checkpoint} names {class_path!r} as its model, which is not a dcgd "
            "LightningModule; give a .ckpt written by 'python -m dcgd fit'"
        )
    try:
        module = cls.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    except DCGDError:
        raise
    except Exception as err:
        raise ModelLoadError(
            f"cannot load {checkpoint} as a Lightning checkpoint ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]})"
        ) from None
    if not hasattr(module, "sampler"):
        raise ConfigError(f"{checkpoint} holds a {cls.__name__}, not a DCGD model that can sample")
    return module.to(device).eval()


def build_datamodule(config_path: Path, overrides: dict[str, Any]):
    """The ``data:`` section of a fit config, instantiated with ``overrides`` on its init_args."""
    from jsonargparse import ArgumentParser

    config = read_yaml(config_path, "data config") or {}
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or "class_path" not in data:
        raise ConfigError(f"{config_path} has no data: {{class_path: ...}} section")
    data = {"class_path": data["class_path"], "init_args": dict(data.get("init_args") or {})}
    data["init_args"].update(overrides)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    try:
        parsed = parser.parse_object({"data": data})
        return parser.instantiate_classes(parsed).data
    except DCGDError:
        raise
    except Exception as err:
        raise ConfigError(
            f"the data config of {config_path} (with inference.data {overrides}) is invalid: "
            f"{' '.join(str(err).split())[:300]}"
        ) from None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
        self.module = None
        self.datamodule = None
        self.evaluator = None

    def prepare(self) -> None:
        from dcgd.eval.evaluator import Evaluator
        from dcgd.eval.metrics import LEFT_OUT

        if not self.checkpoint.is_file():
            load_module(self.checkpoint, torch.device("cpu"))  # raises the missing-file error
        load_checkpoint(self.checkpoint)  # a damaged or code-running file: refused before work
        data_config = self.settings.get("data_config")
        config_path = Path(data_config) if data_config else find_data_config(self.checkpoint)
        if not config_path.is_file():
            raise ConfigError(f"inference.data_config {config_path} does not exist")
        self.data_config = config_path
        self.datamodule = build_datamodule(config_path, dict(self.settings.get("data") or {}))
        buckets = [b.name for b in self.datamodule.buckets]
        lpips = list(self.settings.get("lpips") or [])
        probe = ["psnr", "ssim", "mae", *[f"lpips_{n}" for n in lpips]]
        self.spec.objective.check(probe, buckets, "an inference trial")
        self.device = _device(str(self.settings.get("device", "auto")))
        self.module = load_module(self.checkpoint, self.device)
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

    def fixed_params(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "data_config": str(self.data_config),
            "split": self.split,
            "n_images": self.n_images,
        }

    def _batches(self):
        loader = (
            self.datamodule.val_dataloader()
            if self.split == "val"
            else self.datamodule.test_dataloader()
        )
        for batch in loader:
            batch = {
                k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }
            yield self.datamodule.on_after_batch_transfer(batch, 0)

    @torch.no_grad()
    def run(self, params: dict[str, Any], context: TrialContext | None = None) -> TrialResult:
        from dcgd.tracking.images import removal_grid

        hp = self.module.hparams
        settings = {
            "prompt_mode": params.get("prompt_mode", hp.prompt_mode),
            "w": float(params.get("w", hp.w)),
            "steps": int(params.get("steps", self.settings.get("steps") or hp.val_steps)),
            "seed": int(params.get("seed", hp.seed)),
        }
        sampler = self.module.sampler(
            use_ema=bool(params.get("use_ema", True)), name=params.get("sampler")
        )
        self.evaluator.reset()
        image = None
        for batch in self._batches():
            if "t_info" not in batch:
                raise ConfigError(
                    f"the data of {self.data_config} has no describer, so batches carry no "
                    "prompts; set data.init_args.describer in that config"
                )
            result = sampler(
                batch["source"],
                batch["mask"],
                batch["t_info"],
                batch["t_mask"],
                ids=batch.get("id"),
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
