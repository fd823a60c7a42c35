"""``DCGDPipeline``: saved and loaded without Lightning, the same results; clear load errors."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from dcgd.checkpoints import read_model_checkpoint
from dcgd.cli import main
from dcgd.components.latent_space import tiny_vae_config
from dcgd.errors import ConfigError, ModelLoadError
from dcgd.sampling.pipeline import SETTINGS_FILE, DCGDPipeline, load_pipeline
from tests.factories import save_tiny_stable_diffusion
from tests.numerics import SAMPLED_ATOL
from tests.training.tiny import fit_tiny_checkpoint, make_batch, tiny_module


@pytest.mark.parametrize("space", ["pixel", "vae"])
def test_save_and_load_give_the_same_result(space, tmp_path):
    extra = {"latent_space": "vae", "vae_config": tiny_vae_config()} if space == "vae" else {}
    module = tiny_module(ema_decay=0.9, **extra).eval()
    with torch.no_grad():  # make the EMA differ from the live weights
        for p in module.ema.model.parameters():
            p.add_(0.01)
    pipe = module.pipeline()
    batch = make_batch()
    want = pipe(batch["source"], batch["mask"], batch["t_info"], batch["t_mask"], ids=batch["id"])

    pipe.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"unet", "text_encoder", "tokenizer"}
    assert (tmp_path / "vae").is_dir() == (space == "vae")
    loaded = load_pipeline(tmp_path)
    assert loaded.settings == pipe.settings
    got = loaded(batch["source"], batch["mask"], batch["t_info"], batch["t_mask"], ids=batch["id"])
    # The loaded weights are read unaligned from a memory map, which some BLAS kernels (MKL's
    # on some CPUs) sum in another order than the module's own: equal to rounding.
    torch.testing.assert_close(got, want, rtol=0, atol=SAMPLED_ATOL)
    live = module.pipeline(use_ema=False)
    not_ema = live(
        batch["source"], batch["mask"], batch["t_info"], batch["t_mask"], ids=batch["id"]
    )
    assert not torch.allclose(not_ema, want)  # the EMA weights were the ones exported


def test_compiled_pipeline_runs_its_unet_and_vae_through_the_compiler_and_samples_the_same():
    """``DCGDPipeline.compile`` with a recording back end (graph capture, then eager code):
    the U-Net, the VAE encoder and decoder go through the compiler, in place (the modules and
    their state-dict keys stay), with their weights frozen into the graphs, and the images
    are the eager ones. Inductor itself (a minute of C++ on 2 cores) is checked where it
    runs: ``python -m dcgd bench`` compares its output with eager's and refuses a difference
    beyond float rounding."""
    module = tiny_module(latent_space="vae", vae_config=tiny_vae_config()).eval()
    batch = make_batch()
    args = batch["source"], batch["mask"], batch["t_info"], batch["t_mask"]
    want = module.pipeline()(*args, ids=batch["id"])
    compiled = copy.deepcopy(module).pipeline()
    keys = list(compiled.unet.state_dict())
    graphs: list[tuple[str, int]] = []  # (code, number of tensor inputs)

    def recording_backend(graph: torch.fx.GraphModule, inputs: list) -> object:
        graphs.append((graph.code, sum(torch.is_tensor(x) for x in inputs)))
        return graph.forward

    torch._dynamo.reset()
    assert compiled.compile(recording_backend) is compiled
    got = compiled(*args, ids=batch["id"])
    # U-Net, VAE encoder and VAE decoder; a graph break or two may add graphs, never fewer
    assert len(graphs) >= 3
    unet_inputs = [n for code, n in graphs if "conv_in" in code]
    assert unet_inputs
    # Frozen: the weights are constants of the graph (what lets inductor prepack them), not
    # inputs; unfrozen, each of the U-Net's parameters would be one.
    assert max(unet_inputs) < len(list(compiled.unet.parameters())) / 4
    torch.testing.assert_close(got, want, rtol=0, atol=SAMPLED_ATOL)
    assert list(compiled.unet.state_dict()) == keys
    assert module.pipeline().unet._compiled_call_impl is None  # the copy compiled, not its source


def test_settings_say_what_the_weights_do_not(tmp_path):
    module = tiny_module(layout="inpaint", prompt_mode="negative", w=3.0, sampler="euler")
    module.resolution = 48
    module.pipeline().save_pretrained(tmp_path)
    settings = json.loads((tmp_path / SETTINGS_FILE).read_text())
    assert settings == {
        "format_version": 1,
        "layout": "inpaint",
        "latent_space": "pixel",
        "resolution": 48,
        "prompt_mode": "negative",
        "w": 3.0,
        "sampler": "euler",
        "steps": 2,
        "seed": 0,
        "known_region": "replace",
    }


def test_descriptions_must_match_the_batch():
    pipe = tiny_module().pipeline()
    batch = make_batch()
    with pytest.raises(ConfigError, match="one description per image"):
        pipe(batch["source"], batch["mask"], ["only one"], ["x", "y"])


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pipeline(tmp_path / "missing.ckpt")
    with pytest.raises(ModelLoadError, match="not an exported dcgd model"):
        DCGDPipeline.from_pretrained(tmp_path)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        read_model_checkpoint(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {"text.model.w": torch.zeros(1)}}, tmp_path / "text.ckpt")
    with pytest.raises(ModelLoadError, match="not a checkpoint of the DCGD U-Net"):
        read_model_checkpoint(tmp_path / "text.ckpt")


def _sd_checkpoint(tmp_path) -> tuple[Path, Path]:
    """A fitted checkpoint of a model built from a saved SD-style directory."""
    sd = save_tiny_stable_diffusion(tmp_path / "sd")
    ckpt = fit_tiny_checkpoint(
        tmp_path / "run", pretrained_model=str(sd), latent_space="vae", unet_config=None,
        text_encoder=None, text_encoder_config=None,
    )  # fmt: skip
    return sd, ckpt


def test_a_checkpoint_loads_and_removes_after_its_pretrained_directory_is_deleted(tmp_path):
    sd, ckpt = _sd_checkpoint(tmp_path)
    batch = make_batch(32)
    args = (batch["source"], batch["mask"], batch["t_info"], batch["t_mask"])
    before = load_pipeline(ckpt)(*args, ids=batch["id"], steps=3)
    shutil.rmtree(sd)
    pipe = load_pipeline(ckpt)
    after = pipe(*args, ids=batch["id"], steps=3)
    torch.testing.assert_close(after, before, rtol=0, atol=SAMPLED_ATOL)
    assert (after - batch["source"]).abs()[batch["mask"].expand_as(after) > 0].mean() > 1e-3
    assert pipe.settings.latent_space == "vae" and pipe.settings.resolution == 32
    # The same through the command a user runs, on a photo and a mask on disk.
    image = ((batch["source"][0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    Image.fromarray(image).save(tmp_path / "photo.png")
    mask = (batch["mask"][0, 0].numpy() * 255).astype("uint8")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    code = main([
        "remove", "--checkpoint", str(ckpt), "--image", str(tmp_path / "photo.png"),
        "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "out.png"), "--steps", "2",
    ])  # fmt: skip
    assert code == 0 and (tmp_path / "out.png").is_file()


def test_an_old_checkpoint_loads_while_its_sources_exist_and_says_what_to_do_otherwise(tmp_path):
    sd, ckpt = _sd_checkpoint(tmp_path)
    saved = torch.load(ckpt, weights_only=True)
    components = saved["dcgd"].pop("components")  # as dcgd wrote checkpoints before
    assert components["unet"]["in_channels"] == 13  # paper_mask: 4 + 1 + 4 + 4
    old = tmp_path / "old.ckpt"
    torch.save(saved, old)
    batch = make_batch(32)
    args = (batch["source"], batch["mask"], batch["t_info"], batch["t_mask"])
    want = load_pipeline(ckpt)(*args, ids=batch["id"], steps=2)
    torch.testing.assert_close(
        load_pipeline(old)(*args, ids=batch["id"], steps=2), want, rtol=0, atol=SAMPLED_ATOL
    )
    shutil.rmtree(sd)
    with pytest.raises(ModelLoadError, match="older dcgd.*export") as err:
        load_pipeline(old)
    assert "\n" not in str(err.value)
    # A checkpoint of a newer format than this dcgd reads: one line, before anything is built.
    saved["dcgd"].update(format_version=99, components=components)
    torch.save(saved, tmp_path / "future.ckpt")
    with pytest.raises(ModelLoadError, match="has format 99; this dcgd reads formats up to 2"):
        load_pipeline(tmp_path / "future.ckpt")
