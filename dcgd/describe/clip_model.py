"""open_clip models for the describer and the alignment loss: load, check, save.

Three sources, one function (:func:`load_clip`):

- an open_clip model name with a pretrained tag (``ViT-B-32`` + ``laion2b_s34b_b79k``: the real
  use, downloaded on a connected machine) or with a local checkpoint file;
- a directory in open_clip's own layout (``open_clip_config.json`` + weights), which is what
  :func:`save_clip` writes, e.g. the tiny CLIP trained on the built-in procedural data;
- a config dict (``model_cfg``: ``embed_dim``, ``vision_cfg``, ``text_cfg``) for tiny models
  in tests, optionally with a checkpoint file.

The tokenizer is open_clip's (it ships CLIP's BPE), checked to be non-empty.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dcgd.checkpoints import load_torch_file
from dcgd.components.tokenizer import MIN_VOCAB_SIZE
from dcgd.errors import ModelLoadError
from dcgd.files import read_model_json

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


@dataclass
class LoadedClip:
    """An open_clip model with what the describer needs around it."""

    model: nn.Module
    tokenizer: Any  # open_clip tokenizer: list[str] -> LongTensor [N, context_length]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Where the weights came from; part of the describer's cache key.
    identity: dict[str, Any] = field(default_factory=dict)
    model_cfg: dict[str, Any] | None = None

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))


def tiny_clip_config(
    image_size: int = 32,
    patch_size: int = 8,
    embed_dim: int = 64,
    width: int = 64,
    layers: int = 2,
    context_length: int = 16,
) -> dict[str, Any]:
    """A small CLIP (ViT image tower, transformer text tower) for tests and built-in data."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": patch_size,
            "width": width,
            "layers": layers,
            "head_width": max(16, width // 4),
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": width,
            "heads": max(1, width // 16),
            "layers": layers,
        },
    }


def check_clip_tokenizer(tokenizer: Any, origin: str) -> Any:
    """Raise if an open_clip tokenizer is empty or cannot encode a plain phrase."""
    size = getattr(tokenizer, "vocab_size", None)
    if size is None and hasattr(tokenizer, "tokenizer"):  # open_clip's HFTokenizer
        size = len(tokenizer.tokenizer)
    try:
        ids = tokenizer(["a photo of a cat"])[0]
        # start + at least one word + end; padding is 0.
        encoded = int((ids != 0).sum())
    except Exception as err:  # any failure here means a broken tokenizer
        raise ModelLoadError(f"the tokenizer of {origin!r} cannot encode text: {err}") from None
    if size is None or size < MIN_VOCAB_SIZE or encoded < 3:
        raise ModelLoadError(
            f"the tokenizer of {origin!r} is empty or broken (vocabulary size {size}, "
            f"'a photo of a cat' -> {encoded} tokens). open_clip ships CLIP's BPE vocabulary "
            "(bpe_simple_vocab_16e6.txt.gz); reinstall open_clip_torch or point the model at a "
            "directory holding its tokenizer."
        )
    return tokenizer


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of all parameters and buffers: identifies locally trained weights in a cache key."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def _unknown_model_error(name: str) -> ModelLoadError:
    import open_clip

    if "/" in name or name.startswith((".", "~")):
        return ModelLoadError(
            f"open_clip model directory {name!r} does not exist. Train the built-in tiny CLIP "
            "there with `python -m dcgd fit --config experiments/clip_procedural.yaml`, or give "
            "an open_clip model name (ViT-B-32) with a pretrained tag or checkpoint file."
        )
    close = [m for m in open_clip.list_models() if name.lower()[:5] in m.lower()][:8]
    hint = f" Similar names: {', '.join(close)}." if close else ""
    return ModelLoadError(
        f"{name!r} is neither an open_clip model name nor an existing directory.{hint} See all "
        'valid names with `python -c "import open_clip; print(open_clip.list_models())"`, or '
        f"give a directory holding {CONFIG_FILE} + weights (what "
        "experiments/clip_procedural.yaml saves)."
    )


def _build_from_config(model_cfg: dict[str, Any], seed: int) -> nn.Module:
    import open_clip

    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return open_clip.CLIP(**model_cfg)
    except TypeError as err:
        raise ModelLoadError(
            f"invalid open_clip model_cfg {model_cfg}: {err}. It needs embed_dim, vision_cfg and "
            "text_cfg like open_clip's model_configs/*.json."
        ) from None


def _load_weights(model: nn.Module, checkpoint: str) -> None:
    import open_clip

    if not Path(checkpoint).is_file():
        raise ModelLoadError(
            f"CLIP checkpoint file {checkpoint!r} does not exist. Give the path of an open_clip "
            "checkpoint (.pt / .bin / .safetensors) or a pretrained tag."
        )
    if not checkpoint.endswith((".safetensors", ".npz", ".npy")):
        load_torch_file(checkpoint, what="CLIP checkpoint")  # one line if it would run code
    try:
        open_clip.load_checkpoint(model, checkpoint, strict=True)
    except RuntimeError as err:
        raise ModelLoadError(
            f"the checkpoint {checkpoint!r} does not match the model architecture: {err}"
        ) from None


def _from_directory(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    config = read_model_json(
        directory / CONFIG_FILE,
        f"{directory} is not an open_clip model directory: {CONFIG_FILE} is missing. "
        "Save one with dcgd.describe.clip_model.save_clip or the CLIP training config.",
    )
    model_cfg = config.get("model_cfg", config)
    model = _build_from_config(model_cfg, seed=0)
    weights = [
        directory / WEIGHTS_FILE,
        *sorted(directory.glob("*.pt")),
        *sorted(directory.glob("*.bin")),
    ]
    found = [w for w in weights if w.is_file()]
    if not found:
        raise ModelLoadError(f"no weights in {directory} (expected {WEIGHTS_FILE}).")
    _load_weights(model, str(found[0]))
    return model, model_cfg


def load_clip(
    model: str | None = None,
    pretrained: str | None = None,
    model_cfg: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> LoadedClip:
    """Load an open_clip model (see the module docstring for the three sources).

    ``model``: an open_clip model name (``open_clip.list_models()``), or a directory written by
    :func:`save_clip` (``local-dir:`` prefix optional). ``pretrained``: a tag of that model
    (downloads) or a checkpoint file. ``model_cfg``: build from a config instead of a name;
    without ``pretrained`` the weights are random (seeded), which is only right for tests.
    """
    import open_clip

    check_clip_source(model, pretrained, model_cfg)
    identity: dict[str, Any]
    if model_cfg is not None:
        clip = _build_from_config(model_cfg, seed)
        if pretrained:
            _load_weights(clip, pretrained)
        identity = {"model_cfg": model_cfg, "weights": weights_fingerprint(clip)}
        tokenizer = open_clip.SimpleTokenizer(
            context_length=model_cfg["text_cfg"]["context_length"]
        )
        origin = "model_cfg"
    else:
        path = Path(model.removeprefix("local-dir:")).expanduser()
        if _is_directory_source(model):
            clip, model_cfg = _from_directory(path)
            context = model_cfg["text_cfg"].get("context_length", 77)
            tokenizer = open_clip.SimpleTokenizer(context_length=context)
            identity = {"model_cfg": model_cfg, "weights": weights_fingerprint(clip)}
            origin = str(path)
        else:
            clip, identity = _from_name(model, pretrained)
            model_cfg = open_clip.get_model_config(model)
            tokenizer = open_clip.get_tokenizer(model)
            origin = model
    check_clip_tokenizer(tokenizer, origin)
    clip = clip.to(device).eval()
    preprocess = open_clip.get_model_preprocess_cfg(clip)
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return LoadedClip(
        model=clip,
        tokenizer=tokenizer,
        image_size=size,
        mean=tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)),
        identity=identity,
        model_cfg=model_cfg,
    )


def _is_directory_source(model: str) -> bool:
    return model.startswith("local-dir:") or Path(model).expanduser().is_dir()


def check_clip_source(
    model: str | None = None,
    pretrained: str | None = None,
    model_cfg: dict[str, Any] | None = None,
) -> None:
    """Fail fast (without loading weights) on a source :func:`load_clip` cannot load."""
    import open_clip

    if (model is None) == (model_cfg is None):
        raise ModelLoadError("give exactly one of clip model (a name or directory) and model_cfg.")
    if model_cfg is not None:
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
        if missing:
            raise ModelLoadError(
                f"open_clip model_cfg lacks {missing}; it needs embed_dim, vision_cfg and "
                "text_cfg like open_clip's model_configs/*.json (see tiny_clip_config)."
            )
        if pretrained and not Path(pretrained).is_file():
            raise ModelLoadError(f"CLIP checkpoint file {pretrained!r} does not exist.")
        return
    if _is_directory_source(model):
        path = Path(model.removeprefix("local-dir:")).expanduser()
        if not (path / CONFIG_FILE).is_file():
            raise ModelLoadError(
                f"{str(path)!r} is not an open_clip model directory: {CONFIG_FILE} is missing. "
                "Save one with dcgd.describe.clip_model.save_clip or experiments/clip_procedural.yaml."
            )
        return
    if model.replace("/", "-") not in open_clip.list_models() and not model.startswith("hf-hub:"):
        raise _unknown_model_error(model)
    if model.startswith("hf-hub:"):
        return
    if pretrained is None:
        raise ModelLoadError(
            f"open_clip model {model!r} needs pretrained weights: a tag (one of "
            f"{open_clip.list_pretrained_tags_by_model(model)}) or a checkpoint file. Random "
            "weights would describe nothing."
        )
    if not open_clip.get_pretrained_cfg(model, pretrained) and not Path(pretrained).is_file():
        raise ModelLoadError(
            f"{pretrained!r} is neither a pretrained tag of {model!r} (tags: "
            f"{open_clip.list_pretrained_tags_by_model(model)}) nor an existing checkpoint file."
        )


def _from_name(name: str, pretrained: str | None) -> tuple[nn.Module, dict[str, Any]]:
    import open_clip

    check_clip_source(name, pretrained)
    is_tag = bool(pretrained and open_clip.get_pretrained_cfg(name, pretrained))
    try:
        clip = open_clip.create_model(name, pretrained=pretrained, require_pretrained=True)
    except RuntimeError as err:
        raise ModelLoadError(
            f"could not load open_clip {name!r} with weights {pretrained!r}: {err}. This machine "
            "may be offline: download the checkpoint elsewhere and pass its file path."
        ) from None
    weights = pretrained if is_tag else weights_fingerprint(clip)
    return clip, {"model": name, "pretrained": weights}


def save_clip(clip: nn.Module, model_cfg: dict[str, Any], directory: str | Path) -> Path:
    """Write ``open_clip_config.json`` + safetensors weights: loadable by :func:`load_clip`
    and by ``open_clip.create_model('local-dir:<directory>')``."""
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    size = model_cfg["vision_cfg"].get("image_size", 224)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "size": size,
            "mean": list(OPENAI_DATASET_MEAN),
            "std": list(OPENAI_DATASET_STD),
        },
    }
    state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return directory
