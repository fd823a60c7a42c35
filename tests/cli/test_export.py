"""``python -m dcgd export``: a self-contained folder that gives what the checkpoint gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dcgd.cli import main
from dcgd.data.photos import load_photo
from dcgd.sampling.pipeline import SETTINGS_FILE, load_pipeline
from tests.numerics import SAMPLED_ATOL, assert_same_8bit_image
from tests.training.tiny import fit_tiny_checkpoint, make_batch


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_sd_inpaint):
    """A checkpoint fine-tuned from a (tiny) SD-inpainting copy, in VAE latent space."""
    root = tmp_path_factory.mktemp("export")
    sd = shutil.copytree(tiny_sd_inpaint, root / "sd-inpainting")
    checkpoint = fit_tiny_checkpoint(
        root / "ckpt",
        pretrained_model=str(sd),
        latent_space="vae",
        unet_config=None,
        text_encoder=None,
        text_encoder_config=None,
        prompt_mode="dual",
    )
    photo = load_photo("coffee")[50:350, 100:550]  # 450 x 300
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[100:180, 200:260] = 255
    Image.fromarray(photo).save(root / "photo.png")
    Image.fromarray(mask).save(root / "mask.png")
    return {"root": root, "sd": sd, "ckpt": checkpoint}


def _remove(model, trained, out):
    root = trained["root"]
    return main(
        ["remove", "--checkpoint", str(model), "--image", str(root / "photo.png"),
         "--mask", str(root / "mask.png"), "--out", str(out), "--steps", "3",
         "--t-info", "a table", "--t-mask", "a cup", "--dilate", "3"]
    )  # fmt: skip


def test_export_writes_a_diffusers_style_folder(trained, tmp_path):
    out = tmp_path / "model"
    assert main(["export", "--checkpoint", str(trained["ckpt"]), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"unet", "vae", "text_encoder", "tokenizer", "scheduler", SETTINGS_FILE}
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["latent_space"] == "vae" and settings["layout"] == "paper_mask"
    assert settings["resolution"] == 32  # the size it was trained at
    assert json.loads((out / "unet" / "config.json").read_text())["in_channels"] == 13


def test_export_reload_remove_equals_remove_from_the_checkpoint(trained, tmp_path, capsys):
    exported = tmp_path / "model"
    assert main(["export", "--checkpoint", str(trained["ckpt"]), "--out", str(exported)]) == 0
    assert _remove(trained["ckpt"], trained, tmp_path / "from_ckpt.png") == 0
    assert _remove(exported, trained, tmp_path / "from_export.png") == 0
    # The same weights and noise, but the export's weights are read unaligned from a memory
    # map, which some BLAS kernels sum in another order: equal to rounding, not bit for bit.
    from_ckpt = np.asarray(Image.open(tmp_path / "from_ckpt.png"))
    assert_same_8bit_image(np.asarray(Image.open(tmp_path / "from_export.png")), from_ckpt)

    # Both stand alone: without the Stable Diffusion folder it was tuned from, the checkpoint
    # (it holds its components' configs) and the export still give the same result.
    hidden = shutil.move(trained["sd"], tmp_path / "moved-away")
    try:
        assert _remove(trained["ckpt"], trained, tmp_path / "x.png") == 0
        assert _remove(exported, trained, tmp_path / "again.png") == 0
    finally:
        shutil.move(hidden, trained["sd"])
    assert_same_8bit_image(np.asarray(Image.open(tmp_path / "x.png")), from_ckpt)
    assert_same_8bit_image(np.asarray(Image.open(tmp_path / "again.png")), from_ckpt)


def test_export_uses_the_ema_unless_told_not_to(trained, tmp_path):
    ckpt = str(trained["ckpt"])
    assert main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "ema")]) == 0
    assert main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "raw"), "--no-ema"]) == 0
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    ema = load_pipeline(tmp_path / "ema").unet.conv_in.weight
    raw = load_pipeline(tmp_path / "raw").unet.conv_in.weight
    torch.testing.assert_close(ema, state["ema.model.conv_in.weight"], rtol=0, atol=0)
    torch.testing.assert_close(raw, state["unet.conv_in.weight"], rtol=0, atol=0)
    assert not torch.equal(ema, raw)


def test_export_never_overwrites_other_files(trained, tmp_path, capsys):
    ckpt = str(trained["ckpt"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "busy")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (
        main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "busy"), "--overwrite"]) == 2
    )
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    out = str(tmp_path / "model")
    assert main(["export", "--checkpoint", ckpt, "--out", out]) == 0
    assert main(["export", "--checkpoint", ckpt, "--out", out]) == 2
    assert main(["export", "--checkpoint", ckpt, "--out", out, "--overwrite"]) == 0


LIGHTNING_FREE = """
import sys
for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
    sys.modules[name] = None  # importing any of them now fails
import torch
from dcgd.sampling.pipeline import load_pipeline
batch = torch.load(sys.argv[2])
pipe = load_pipeline(sys.argv[1])
result = pipe(batch["source"], batch["mask"], batch["t_info"], batch["t_mask"], ids=batch["id"])
torch.save(result, sys.argv[3])
"""


@pytest.mark.slow
def test_an_export_loads_without_lightning(trained, tmp_path):
    exported = tmp_path / "model"
    assert main(["export", "--checkpoint", str(trained["ckpt"]), "--out", str(exported)]) == 0
    batch = make_batch(size=32)
    torch.save(batch, tmp_path / "batch.pt")
    subprocess.run(
        [sys.executable, "-c", LIGHTNING_FREE, str(exported), str(tmp_path / "batch.pt"),
         str(tmp_path / "result.pt")],
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    want = load_pipeline(trained["ckpt"])(
        batch["source"], batch["mask"], batch["t_info"], batch["t_mask"], ids=batch["id"]
    )
    # Same weights and noise; the thread count (1 there, torch's default here) and the weights'
    # alignment (a memory map there) differ, which reorders float sums: equal to rounding.
    got = torch.load(tmp_path / "result.pt")
    torch.testing.assert_close(got, want, rtol=0, atol=SAMPLED_ATOL)
