"""Every experiment config parses, and the ablation files compose on the paper's configs.

Only parsed (``--print_config``): the SD-sized ones are never built here.
"""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import pytest
import yaml

from dcgd.cli import main

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
CONFIGS = sorted(EXPERIMENTS.glob("*.yaml"))
ABLATIONS = sorted((EXPERIMENTS / "ablations").glob("*.yaml"))
PAPER = ["places_sd.yaml", "paris_sd.yaml"]


@functools.cache
def _parse(*configs: Path) -> str:
    argv = ["fit"]
    for config in configs:
        argv += ["--config", str(config)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--print_config"]) == 0
    return out.getvalue()


def _resolved(*configs: Path) -> dict:
    """The config LightningCLI resolves from ``configs`` (parsed once per combination)."""
    return yaml.safe_load(_parse(*configs))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_experiment_config_parses(config):
    resolved = _resolved(config)
    assert resolved["model"]["class_path"] and resolved["data"]["class_path"]


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_are_the_paper_setting(name):
    resolved = _resolved(EXPERIMENTS / name)
    trainer, model = resolved["trainer"], resolved["model"]["init_args"]
    data = resolved["data"]["init_args"]
    assert model["pretrained_model"] == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert data["size"] == 512
    global_batch = (
        data["batch_size"]
        * trainer["devices"]
        * trainer["num_nodes"]
        * trainer["accumulate_grad_batches"]
    )
    assert global_batch == 64
    assert model["lr"] == 1e-4 and model["weight_decay"] == 0.0  # Adam
    assert trainer["precision"] == "bf16-mixed" and trainer["accelerator"] == "gpu"
    assert (model["layout"], model["prompt_mode"], model["loss"]) == (
        "paper_mask",
        "dual",
        "combined",
    )
    # The speed switches that are safe everywhere are on; the loader keeps GPUs fed.
    assert model["attention"] == "sdpa" and model["fused_optimizer"] is True
    assert not model["cache_encodings"]  # refused with a jointly trained text encoder
    assert data["num_workers"] >= 4 and data["persistent_workers"] and data["pin_memory"]


# What each ablation file changes, and nothing else in the model.
CHANGES = {
    "prompt_none.yaml": {"prompt_mode": "none"},
    "prompt_positive.yaml": {"prompt_mode": "positive"},
    "prompt_negative.yaml": {"prompt_mode": "negative"},
    "layout_paper.yaml": {"layout": "paper"},
    "layout_inpaint.yaml": {"layout": "inpaint"},
    "loss_branches.yaml": {"loss": "branches", "prompt_dropout": 0.1},
}


def test_the_ablations_are_the_ones_listed():
    assert sorted(p.name for p in ABLATIONS) == sorted(CHANGES)


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda p: p.name)
def test_an_ablation_composes_on_a_paper_config(ablation):
    base = _resolved(EXPERIMENTS / "places_sd.yaml")
    composed = _resolved(EXPERIMENTS / "places_sd.yaml", ablation)
    changed = {
        key: value
        for key, value in composed["model"]["init_args"].items()
        if base["model"]["init_args"][key] != value
    }
    assert changed == {
        k: v for k, v in CHANGES[ablation.name].items() if base["model"]["init_args"][k] != v
    }
    assert changed, "the ablation must change the model"
    assert composed["data"] == base["data"]
    # Its own run directory and MLflow run name, so ablations never resume each other.
    assert composed["trainer"]["default_root_dir"] != base["trainer"]["default_root_dir"]
    logger = composed["trainer"]["logger"]["init_args"]
    assert logger["run_name"] == ablation.stem
    assert logger["experiment_name"] == base["trainer"]["logger"]["init_args"]["experiment_name"]


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_train_on_paste_and_hole_pairs(name):
    data = _resolved(EXPERIMENTS / name)["data"]["init_args"]
    assert 0 < data["paste_probability"] < 1  # a mix: removal pairs and Table-1 hole pairs
    assert data["cutouts"]  # from a configured cut-out source


def test_a_paper_config_without_cutouts_stops_at_start_up(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "places").mkdir()
    tiny = {
        "pretrained_model": "null",
        "latent_space": "pixel",
        "unet_config": "{block_out_channels: [8, 16]}",
        "text_encoder": "tiny",
        "text_encoder_config": "{hidden_size: 16}",
    }
    argv = ["fit", "--config", str(EXPERIMENTS / "places_sd.yaml")]
    for key, value in tiny.items():  # a tiny model: no Stable Diffusion weights needed
        argv += [f"--model.init_args.{key}", value]
    argv += ["--data.init_args.describer", "null", "--trainer.logger", "false"]
    argv += ["--data.init_args.root", str(tmp_path / "places"), "--data.init_args.cutouts", "null"]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "set data.cutouts" in lines[0], lines


def test_model_help_explains_each_argument(capsys):
    """The argument docs live in dcgd.training.arguments; jsonargparse must still find them."""
    from dcgd.cli import main

    try:
        main(["fit", "--model.help", "dcgd.training.module.DCGDModule"])
    except SystemExit as stop:
        assert stop.code in (0, None)
    out = " ".join(capsys.readouterr().out.split())
    assert "guidance weight inside the eq. 7 loss" in out
    assert "Min-SNR loss weighting" in out


def test_a_config_of_the_old_layout_says_where_its_classes_moved(tmp_path, capsys):
    """A run directory's config.yaml from before the layout change names dcgd.text.*."""
    from dcgd.data.config import build_datamodule
    from dcgd.errors import ConfigError

    config = yaml.safe_load((EXPERIMENTS / "quickstart.yaml").read_text())
    describer = config["data"]["init_args"]["describer"]
    assert describer["class_path"] == "dcgd.describe.base.LabelDescriber"
    describer["class_path"] = "dcgd.text.describer_base.LabelDescriber"
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(old), "--print_config"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "dcgd.text.describer_base is now dcgd.describe.base" in line
    with pytest.raises(ConfigError, match="dcgd.text.describer_base is now dcgd.describe.base"):
        build_datamodule(config["data"])
