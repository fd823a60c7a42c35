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
from dcgd.components.schedulers import sampling_scheduler
from dcgd.method.input import encode_conditions
from dcgd.method.randomness import initial_noise


def test_dcgd_sampler_equals_diffusers_inpaint_pipeline_on_the_same_parts():
    settings = Settings(resolution=32, batch=2, steps=3, w=2.5)
    module = build_module(settings).eval()
    batch = example_batch(settings, torch.device("cpu"))
    sampler = module.pipeline(use_ema=False)
    pipe = diffusers_pipeline(module)
    pipe.set_progress_bar_config(disable=True)
    # One schedule config (the diffusers pipeline normalises steps_offset on its own copy).
    pipe.scheduler = sampling_scheduler(sampler.settings.sampler, sampler.train_schedule)

    ours = sampler(
        batch["source"], batch["mask"], batch["t_info"], batch["t_mask"],
        prompt_mode="dual", w=settings.w, steps=settings.steps, seed=0, ids=batch["id"],
        paste_back=False,
        known_region="free",  # diffusers' 9-channel pipeline leaves the whole latent free
    )  # fmt: skip
    # The pipeline draws its masked-image latent from the VAE posterior; give it ours (the
    # mode) and our starting noise, and everything else is its own code path.
    shape = (module.space.channels, 16, 16)
    noise = initial_noise(shape, batch["id"], 0, torch.device("cpu"), torch.float32)
    conditions = encode_conditions("inpaint", batch["source"], batch["mask"], module.space.encode)
    context = conditions["context"]
    reference = pipe(
        prompt=batch["t_info"], negative_prompt=batch["t_mask"],
        image=(batch["source"] + 1) / 2, mask_image=batch["mask"], height=32, width=32,
        num_inference_steps=settings.steps, guidance_scale=settings.w, output_type="pt",
        latents=noise, masked_image_latents=context,
    ).images  # fmt: skip
    assert ours.abs().mean() > 0.05  # not a trivial all-zero output
    # Both roads run the same U-Net, VAE and text encoder on batches of the same shapes, so the
    # same kernels: only the guidance and scheduler arithmetic is written otherwise, and the
    # results are 6e-8 apart under every back end tried (threads, ISA, oneDNN/MKL paths).
    torch.testing.assert_close(ours, reference * 2 - 1, atol=1e-5, rtol=0)
    # With the prompts swapped the result differs: the comparison is sensitive to eq. 6.
    swapped = sampler(
        batch["source"], batch["mask"], batch["t_mask"], batch["t_info"],
        prompt_mode="dual", w=settings.w, steps=settings.steps, seed=0, ids=batch["id"],
        paste_back=False,
        known_region="free",  # diffusers' 9-channel pipeline leaves the whole latent free
    )  # fmt: skip
    assert (swapped - ours).abs().max() > 1e-3


@pytest.mark.slow
def test_bench_command_reports_both_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--resolution", "32", "--steps", "2", "--train-steps", "2", "--warmup", "1"]
    # TorchDynamo's eager back end: the compiled side's path, without inductor's minute of C++
    argv += ["--compile-backend", "eager", "--compile-reference"]
    assert main([*argv, "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in ("sampling_ratio_vs_diffusers", "train_ratio_vs_bare_loop"):
        assert report[key] > 0
    assert report["sampling_ratio_vs_diffusers"] == pytest.approx(
        report["sampling_s_per_image"] / report["diffusers_s_per_image"]
    )
    assert report["compiled_ratio_vs_diffusers"] == pytest.approx(
        report["compiled_s_per_image"] / report["diffusers_s_per_image"]
    )
    assert report["compiled_max_abs_difference"] < 1e-5  # graph capture computes the same
    assert report["compiled_ratio_vs_diffusers_compiled"] > 0
    assert report["train_ratio_vs_bare_loop"] == pytest.approx(
        report["bare_loop_samples_per_s"] / report["train_samples_per_s"]
    )
    step_s = report["settings"]["batch"] / report["train_samples_per_s"]
    assert report["train_achieved_tflops"] == pytest.approx(
        report["train_tflops_per_step"] / step_s
    )
    assert report["train_mfu"] is None  # a CPU: no peak to divide by
    printed = capsys.readouterr().out
    assert "sampling" in printed and "training" in printed and "model FLOP utilisation" in printed
    assert "compiled: dcgd" in printed and "diffusers compiled alike" in printed


def test_bench_refuses_a_compiled_speed_up_that_changes_the_images(capsys):
    """A compiler that shifts the U-Net's output by 0.01 makes faster code of another
    computation: the bench says so in one line instead of reporting its ratio."""
    from torch._dynamo import register_backend

    @register_backend(name="dcgd_test_shifting")
    def shifting(graph: torch.fx.GraphModule, inputs: list) -> object:
        def run(*args):
            out = graph.forward(*args)
            return tuple(
                o + 0.01 if torch.is_tensor(o) and o.is_floating_point() else o for o in out
            )

        return run

    argv = ["bench", "--resolution", "32", "--steps", "2", "--repeats", "1", "--only", "sampling"]
    torch._dynamo.reset()
    assert main([*argv, "--compile-backend", "dcgd_test_shifting"]) != 0
    err = capsys.readouterr().err
    assert "compiled sampling differs from eager" in err and "Traceback" not in err


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


def test_training_step_flops_are_one_forward_and_backward_of_the_dual_unet_plus_encoders():
    from torch.utils.flop_counter import FlopCounterMode

    from dcgd.benchmarks.speed import training_step_flops

    settings = Settings(resolution=32, batch=2)
    batch = example_batch(settings, torch.device("cpu"))
    step = training_step_flops(settings, batch)
    module = build_module(settings)
    prompts = batch["t_info"] + batch["t_mask"]
    encoders, unet = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with torch.no_grad():
        with encoders:  # target and hole through the VAE, both prompts through the text tower
            module.space.vae.encode(batch["target"])
            module.space.vae.encode(batch["source"])
            states = module.text(prompts)
        x = torch.randn(4, module.unet.config.in_channels, 16, 16)  # both branches: 2B
        with unet:
            module.unet(x, torch.tensor([1, 2, 3, 4]), encoder_hidden_states=states)
    # backward costs 2 forwards, less the input gradient of conv_in that nothing needs
    backward_and_forward = (step - encoders.get_total_flops()) / unet.get_total_flops()
    assert 2.9 < backward_and_forward <= 3.0


def test_peak_flops_come_from_the_flag_else_the_gpu_table():
    from dcgd.benchmarks.speed import peak_tflops

    cpu = torch.device("cpu")
    assert peak_tflops(Settings(), cpu) is None  # no MFU on a CPU unless told the peak
    assert peak_tflops(Settings(peak_tflops=42.0), cpu) == 42.0
