"""``DCGDPipeline``: a trained DCGD model ready to remove objects, without Lightning.

Loaded from a Lightning checkpoint (``.ckpt``, EMA weights by default) or from the directory
``python -m dcgd export`` writes, a diffusers-style layout::

    unet/ vae/ (VAE latent space only) text_encoder/ tokenizer/ scheduler/ dcgd_pipeline.json

``dcgd_pipeline.json`` holds what the weights alone do not say: the eq. 5 input layout, the
latent space, the working resolution and the sampling defaults (prompt mode, ``w``, sampler,
steps, seed).

    >>> from dcgd.sampling.pipeline import load_pipeline
    >>> pipe = load_pipeline("exported/")            # or "runs/x/checkpoints/last.ckpt"
    >>> result = pipe(source, mask, t_info=["a street"], t_mask=["a car"])
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from dcgd.checkpoints import read_model_checkpoint
from dcgd.components.build import (
    CHECKPOINT_FORMAT,
    Components,
    build_components,
    components_from_configs,
    load_weights,
)
from dcgd.components.latent_space import LatentSpace, PixelSpace, VAESpace
from dcgd.components.schedulers import sampling_scheduler
from dcgd.components.text_encoder import TextConditioner
from dcgd.components.unet import load_unet
from dcgd.errors import ConfigError, DCGDError, ModelLoadError, one_line
from dcgd.files import read_model_json
from dcgd.method.guidance import check_prompt_mode
from dcgd.method.input import check_layout
from dcgd.sampling.sampler import check_known_region, sample
from dcgd.validation import finite, whole

SETTINGS_FILE = "dcgd_pipeline.json"
FORMAT_VERSION = 1


@dataclass
class PipelineSettings:
    """What a pipeline needs besides its weights; the defaults of every call."""

    layout: str
    latent_space: str  # "vae" or "pixel"
    resolution: int  # side of the square the model was trained on
    prompt_mode: str = "dual"
    w: float = 1.5
    sampler: str = "ddim"
    steps: int = 25
    seed: int = 0
    known_region: str = "replace"  # see dcgd.sampling.sampler

    def __post_init__(self) -> None:
        check_layout(self.layout)
        check_prompt_mode(self.prompt_mode)
        check_known_region(self.known_region)
        check_sampling(self.w, self.steps, self.seed)
        if self.latent_space not in ("vae", "pixel"):
            raise ConfigError(f"latent_space must be 'vae' or 'pixel', got {self.latent_space!r}")


def check_sampling(w: float, steps: int, seed: int, steps_name: str = "steps") -> None:
    """A NaN ``w`` fills the hole with black; zero steps fail deep inside the scheduler."""
    finite("w", w)
    whole(steps_name, steps, 1)
    whole("seed", seed, 0)


class DCGDPipeline:
    """U-Net + latent space + text encoder + noise schedule + settings."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        space: LatentSpace,
        text: TextConditioner,
        train_schedule: SchedulerMixin,
        settings: PipelineSettings,
    ) -> None:
        self.unet = unet
        self.space = space
        self.text = text
        self.train_schedule = train_schedule
        self.settings = settings
        self.compiled = False  # see compile()

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: VAE downsampling x U-Net downsampling."""
        levels = len(self.unet.config.block_out_channels)
        return self.space.downsample * 2 ** (levels - 1)

    def to(self, device: str | torch.device) -> DCGDPipeline:
        for part in (self.unet, self.space, self.text):
            part.to(device)
        return self

    def compile(self, backend: str | Callable = "inductor") -> DCGDPipeline:
        """Compile the U-Net and the VAE for sampling (``torch.compile``); returns ``self``.

        Faster sampling, the same result up to float rounding (on this project's 2-core CPU,
        the bench's tiny model: about 0.7x the eager time, experiments/BENCHMARKS.md). With
        inductor the weights are frozen into the compiled code (``frozen_weights``: constant
        folding and, on a CPU, oneDNN's prepacked convolutions fused with their activation),
        so compile last: after loading weights and moving to the device. The first call of
        each input shape compiles (tens of seconds on a CPU, in every new process: inductor
        does not cache graphs with frozen weights on disk), so it pays off over many images
        or steps, not for one. Training never compiles this way
        (its weights change). ``backend`` is ``torch.compile``'s (``"eager"``: graph capture
        only)."""
        vae = self.space.vae if isinstance(self.space, VAESpace) else None
        compile_for_sampling(self.unet, vae, backend)
        self.compiled = True
        return self

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        source: torch.Tensor,
        mask: torch.Tensor,
        t_info: Sequence[str] | None = None,
        t_mask: Sequence[str] | None = None,
        *,
        prompt_mode: str | None = None,
        w: float | None = None,
        steps: int | None = None,
        seed: int | None = None,
        sampler: str | None = None,
        ids: Sequence[str] | None = None,
        paste_back: bool = True,
        known_region: str | None = None,
    ) -> torch.Tensor:
        """Fill ``mask`` ``[B,1,H,W]`` in ``source`` ``[B,3,H,W]`` ([-1,1]) with eq. 6.

        Settings left ``None`` take the pipeline's defaults; missing descriptions are "".
        Deterministic for a seed and a sample id (``ids``, default ``"0", "1", ...``).
        """
        s = self.settings
        batch = source.shape[0]
        t_info = list(t_info) if t_info is not None else [""] * batch
        t_mask = list(t_mask) if t_mask is not None else [""] * batch
        if len(t_info) != batch or len(t_mask) != batch:
            raise ConfigError(
                f"give one description per image: {batch} images, {len(t_info)} t_info, "
                f"{len(t_mask)} t_mask"
            )
        scheduler = sampling_scheduler(sampler or s.sampler, self.train_schedule)
        device = self.device
        with frozen_weights() if self.compiled else contextlib.nullcontext():
            return sample(
                self.unet,
                self.space,
                self.text,
                scheduler,
                s.layout,
                source.to(device, torch.float32),
                mask.to(device, torch.float32),
                t_info,
                t_mask,
                prompt_mode=prompt_mode or s.prompt_mode,
                w=s.w if w is None else w,
                steps=steps or s.steps,
                seed=s.seed if seed is None else seed,
                ids=list(ids) if ids is not None else [str(i) for i in range(batch)],
                paste_back=paste_back,
                known_region=known_region or s.known_region,
            )

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the diffusers-style directory described in the module docstring."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(directory / "unet")
        if isinstance(self.space, VAESpace):
            self.space.vae.save_pretrained(directory / "vae")
        self.text.save_pretrained(directory)
        self.train_schedule.save_pretrained(directory / "scheduler")
        settings = {"format_version": FORMAT_VERSION, **asdict(self.settings)}
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> DCGDPipeline:
        """Load a directory written by :meth:`save_pretrained` (``python -m dcgd export``)."""
        directory = Path(directory)
        settings_path = directory / SETTINGS_FILE
        raw = read_model_json(
            settings_path,
            f"{directory} is not an exported dcgd model ({SETTINGS_FILE} is missing); "
            "write one with: python -m dcgd export --checkpoint <.ckpt> --out <dir>",
        )
        if raw.pop("format_version", None) != FORMAT_VERSION:
            raise ModelLoadError(
                f"{settings_path} has format version {raw.get('format_version')!r}; this dcgd "
                f"reads version {FORMAT_VERSION}. Export the model again with this version."
            )
        known = {f.name for f in fields(PipelineSettings)}
        settings = PipelineSettings(**{k: v for k, v in raw.items() if k in known})
        space: LatentSpace
        if settings.latent_space == "vae":
            space = VAESpace.from_pretrained(str(directory), subfolder="vae")
        else:
            space = PixelSpace()
        try:
            schedule = DDPMScheduler.from_pretrained(str(directory), subfolder="scheduler")
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"no scheduler/ under {directory}: {one_line(err)}") from None
        unet, text = load_unet(str(directory)), TextConditioner.from_pretrained(str(directory))
        return cls(unet.eval(), space.eval(), text.eval(), schedule, settings)

    @classmethod
    def from_checkpoint(cls, path: str | Path, use_ema: bool = True) -> DCGDPipeline:
        """Load a ``DCGDModule`` Lightning checkpoint; the EMA U-Net when it has one.

        The checkpoint holds its components' configs (``dcgd.components.build``), so this
        needs neither the directory it was trained from nor the training code. A checkpoint
        of an older dcgd (weights and hyperparameters only) is rebuilt from what it was
        built from, when that is still at hand."""
        checkpoint = read_model_checkpoint(path)
        saved = checkpoint.get("dcgd") if isinstance(checkpoint.get("dcgd"), dict) else {}
        version = saved.get("format_version", 1)
        if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
            raise ModelLoadError(
                f"checkpoint {path} has format {version!r}; this dcgd reads formats up to "
                f"{CHECKPOINT_FORMAT}: update dcgd, or export the model with the version that "
                "wrote it"
            )
        try:
            if "components" in saved:
                components = components_from_configs(saved["components"])
                settings = PipelineSettings(**saved["pipeline"])
            else:
                components, settings = _from_hyperparameters(path, checkpoint)
            load_weights(components, checkpoint["state_dict"], use_ema)
        except ModelLoadError:
            raise
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError, OSError) as err:
            # Settings or weights that do not fit together: a damaged or foreign file.
            raise ModelLoadError(
                f"checkpoint {path} does not hold a model this dcgd can build: {one_line(err)[:200]}"
            ) from None
        c = components
        return cls(c.unet.eval(), c.space.eval(), c.text.eval(), c.schedule, settings)


def _from_hyperparameters(
    path: str | Path, checkpoint: dict[str, Any]
) -> tuple[Components, PipelineSettings]:
    """Components and settings of a checkpoint written before checkpoints held their
    components' configs: rebuilt by the component builder from the saved hyperparameters."""
    hp = checkpoint.get("hyper_parameters")
    if not isinstance(hp, dict):
        raise ModelLoadError(
            f"{path} holds no hyper_parameters to rebuild the model from; give a .ckpt "
            "written by 'python -m dcgd fit'"
        )
    built = {k: hp[k] for k in inspect.signature(build_components).parameters if k in hp}
    try:
        components = build_components(**built)
    except DCGDError as err:
        origin = {k: hp.get(k) for k in ("pretrained_model", "text_encoder") if hp.get(k)}
        raise ModelLoadError(
            f"checkpoint {path} was written by an older dcgd and needs what it was built from "
            f"({origin}) to load: {one_line(err)}. Where that is present, export it once "
            "('python -m dcgd export --checkpoint <.ckpt> --out <dir>') and use the folder"
        ) from None
    resolution = (checkpoint.get("dcgd") or {}).get("resolution")
    space = components.space
    settings = PipelineSettings(
        layout=hp.get("layout", "paper_mask"),
        latent_space="pixel" if isinstance(space, PixelSpace) else "vae",
        resolution=int(resolution or components.unet.config.sample_size * space.downsample),
        prompt_mode=hp.get("prompt_mode", "dual"),
        w=hp.get("w", 1.5),
        sampler=hp.get("sampler", "ddim"),
        steps=hp.get("val_steps", 25),
        seed=hp.get("seed", 0),
    )
    return components, settings


def compile_for_sampling(
    unet: torch.nn.Module, vae: torch.nn.Module | None, backend: str | Callable = "inductor"
) -> None:
    """``torch.compile`` the U-Net and the VAE's encoder and decoder in place for inference
    (see ``DCGDPipeline.compile``): ``nn.Module.compile`` keeps the modules and their
    state-dict keys; ``dynamic=False`` specialises to each input shape. Call them under
    ``frozen_weights()``."""
    parts = [unet] if vae is None else [unet, vae.encoder, vae.decoder]
    for part in parts:
        part.compile(backend=backend, dynamic=False)


def frozen_weights() -> contextlib.AbstractContextManager:
    """Inductor's ``freezing`` while compiled modules run: their weights become constants
    of the compiled code (valid while they do not change, so for no_grad sampling only).
    Set around the calls, not as a torch.compile option: TorchDynamo reads it while it
    traces, to treat the parameters as static (and guard on their identity)."""
    import torch._inductor.config

    return torch._inductor.config.patch(freezing=True)


def load_pipeline(path: str | Path, use_ema: bool = True) -> DCGDPipeline:
    """A pipeline from a ``.ckpt`` file or an exported directory."""
    path = Path(path)
    if path.is_dir():
        return DCGDPipeline.from_pretrained(path)
    return DCGDPipeline.from_checkpoint(path, use_ema=use_ema)
