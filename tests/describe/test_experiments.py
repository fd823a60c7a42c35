"""experiments/text_encoder.yaml runs through ``python -m dcgd fit`` and leaves τθ for DCGD.

(experiments/clip_procedural.yaml runs in the session fixture ``trained_clip``.)
"""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextModel

from dcgd.cli import main
from dcgd.components.text_encoder import TextConditioner
from tests.clip import REPO, one_thread

pytestmark = pytest.mark.slow  # uses the session's trained CLIP


def test_text_encoder_config_runs_and_saves_a_stable_diffusion_text_encoder(trained_clip, workdir):
    args = [
        "fit",
        "--config",
        str(REPO / "experiments" / "text_encoder.yaml"),
        "--model.init_args.clip_model",
        str(trained_clip),
        "--trainer.max_steps",
        "3",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--data.init_args.size",
        "32",
    ]
    with one_thread():
        assert main(args) == 0
    saved = workdir / "runs" / "text_encoder" / "text_encoder"
    text = TextConditioner.from_pretrained(str(saved))
    plain = CLIPTextModel.from_pretrained(saved, subfolder="text_encoder")
    ids = text.tokenize(["green star", "water with red circles"])
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).last_hidden_state, text.encode_ids(ids))
    assert (workdir / "runs" / "text_encoder" / "checkpoints" / "last.ckpt").is_file()
