"""``python -m dcgd bench`` compares like with like: our sampler IS diffusers' inpainting
loop (eq. 6 = CFG with T_mask as the negative prompt), and the command reports its ratios."""

from __future__ import annotations

import json

import pytest
import torch

from dcgd.benchmarks.speed import (
    Settings,
    build_module,
    diffusers_pipeline,
    example_batch,
)
from dcgd.cli import main
from dcgd.sampling.sampler import encode_conditions, initial_noise


def test_dcgd_sampler_equals_diffusers_inpaint_pipeline_on_the_same_parts():
    settings = Settings(resolution=32, batch=2, steps=3, w=2.5)
    module = build_module(settings).eval()
    batch = example_batch(settings, torch.device("cpu"))
    sampler = module.sampler(use_ema=False)
    pipe = diffusers_pipeline(module)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = sampler.scheduler  # one schedule (the pipeline normalises steps_offset)

    ours = sampler(
        batch["source"], batch["mask"], batch["t_info"], batch["t_mask"],
        prompt_mode="dual", w=settings.w, steps=settings.steps, ids=batch["id"], paste_back=False,
    )  # fmt: skip
    # The pipeline draws its masked-image latent from the VAE posterior; give it ours (the
    # mode) and our starting noise, and everything else is its own code path.
    shape = (module.space.channels, 16, 16)
    noise = initial_noise(shape, batch["id"], 0, torch.device("cpu"), torch.float32)
    context = encode_conditions(module.space, "inpaint", batch["source"], batch["mask"])["context"]
    reference = pipe(
        prompt=batch["t_info"], negative_prompt=batch["t_mask"],
        image=(batch["source"] + 1) / 2, mask_image=batch["mask"], height=32, width=32,
        num_inference_steps=settings.steps, guidance_scale=settings.w, output_type="pt",
        latents=noise, masked_image_latents=context,
    ).images  # fmt: skip
    assert ours.abs().mean() > 0.05  # not a trivial all-zero output
    torch.testing.assert_close(ours, reference * 2 - 1, atol=1e-5, rtol=0)
    # With the prompts swapped the result differs: the comparison is sensitive to eq. 6.
    swapped = sampler(
        batch["source"], batch["mask"], batch["t_mask"], batch["t_info"],
        prompt_mode="dual", w=settings.w, steps=settings.steps, ids=batch["id"], paste_back=False,
    )  # fmt: skip
    assert (swapped - ours).abs().max() > 1e-3


@pytest.mark.slow
def test_bench_command_reports_both_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--resolution", "32", "--steps", "2", "--train-steps", "2", "--warmup", "1"]
    assert main([*argv, "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in ("sampling_ratio_vs_diffusers", "train_ratio_vs_bare_loop"):
        assert report[key] > 0
    assert report["sampling_ratio_vs_diffusers"] == pytest.approx(
        report["sampling_s_per_image"] / report["diffusers_s_per_image"]
    )
    assert report["train_ratio_vs_bare_loop"] == pytest.approx(
        report["bare_loop_samples_per_s"] / report["train_samples_per_s"]
    )
    printed = capsys.readouterr().out
    assert "sampling" in printed and "training" in printed


def test_bench_rejects_unknown_options_in_its_config(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text("resolution: 32\nstepz: 3\n")
    assert main(["bench", "--config", str(config)]) == 2
    assert "stepz" in capsys.readouterr().err


def test_module_overrides_reach_the_timed_module_and_unknown_names_are_reported(capsys):
    assert build_module(Settings()).hparams.attention == "sdpa"
    assert build_module(Settings(module={"attention": "classic"})).hparams.attention == "classic"
    assert main(["bench", "--module", '{"atention": "classic"}', "--only", "training"]) == 2
    assert "atention" in capsys.readouterr().err
