"""``python -m dcgd``: the command surface, config composition and one-line errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml

from dcgd.cli import TOOL_COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "experiments" / "quickstart.yaml")


def test_help_lists_every_command_and_each_has_its_module(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict"):
        assert f"\n  {name} " in out
    for name in TOOL_COMMANDS:
        assert importlib.util.find_spec(f"dcgd.cli.{name}") is not None, name
        assert f"\n  {name} " in out, name


def test_module_entry_point_runs_as_a_program():
    done = subprocess.run(
        [sys.executable, "-m", "dcgd", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert "fit" in done.stdout


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_wrong_config_key_is_one_clear_line(capsys, workdir):
    err = _one_line_error(capsys, ["fit", "--config", QUICKSTART, "--model.init_args.w_trian", "2"])
    assert "model.init_args.w_trian" in err and "DCGDModule" in err


def test_wrong_key_in_a_config_file_is_one_clear_line(capsys, workdir):
    Path("bad.yaml").write_text("data:\n  init_args:\n    sise: 32\n")
    err = _one_line_error(capsys, ["fit", "--config", QUICKSTART, "--config", "bad.yaml"])
    assert "sise" in err


def test_missing_config_file_is_one_clear_line(capsys, workdir):
    err = _one_line_error(capsys, ["fit", "--config", "does/not/exist.yaml"])
    assert "does/not/exist.yaml" in err and "does not exist" in err


def _program_error(argv: list[str], **env: str) -> str:
    """Run ``python -m dcgd`` as a user would; its stderr ends with one error line."""
    import os

    done = subprocess.run(
        [sys.executable, "-m", "dcgd", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


def test_missing_data_root_is_one_clear_line(workdir):
    argv = ["fit", "--config", QUICKSTART, "--data.init_args.dataset", "places365"]
    err = _program_error([*argv, "--data.init_args.root", "/no/such/places"])
    assert "/no/such/places" in err


def test_unreachable_tracking_server_is_one_clear_line(workdir):
    # Port 9 (discard) on loopback: the connection is refused at once.
    err = _program_error(
        ["fit", "--config", QUICKSTART, "--trainer.max_steps", "1"],
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",
    )
    assert "127.0.0.1:9" in err and "MLflow" in err


def test_configs_compose_and_the_last_one_wins(capsys, workdir):
    Path("a.yaml").write_text("model:\n  init_args:\n    w: 2.0\n    prompt_mode: positive\n")
    Path("b.yaml").write_text("model:\n  init_args:\n    w: 3.0\n")
    argv = ["fit", "--config", QUICKSTART, "--config", "a.yaml", "--config", "b.yaml"]
    assert main([*argv, "--print_config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    args = config["model"]["init_args"]
    assert args["w"] == 3.0  # b overrides a
    assert args["prompt_mode"] == "positive"  # a overrides the quick start
    assert args["layout"] == "paper_mask"  # the quick start's value survives
