"""What each argument of ``DCGDModule`` means: its docstring, kept apart from the wiring.

jsonargparse reads it for ``python -m dcgd fit --model.help dcgd.training.module.DCGDModule``
and ``--print_config`` comments, so every config key is explained where users look.
"""

DCGD_MODULE_DOC = """Dual-CLIP Guided Diffusion for object removal.

Args:
    pretrained_model: Stable Diffusion (inpainting) hub id or local directory. Its
        ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/`` are used
        unless overridden below. ``None`` builds everything from the configs below.
    unet_config: build the U-Net from scratch: keys of ``UNet2DConditionModel`` merged
        over a tiny two-level default. ``in_channels``, ``out_channels`` and
        ``cross_attention_dim`` are derived from the layout, latent space and text encoder.
    latent_space: ``vae`` (the paper, Stable Diffusion) or ``pixel`` (tiny runs).
    vae_config: build the VAE from an ``AutoencoderKL`` config instead of loading it.
    text_encoder: directory of a (fine-tuned) text encoder saved by ``TextEncoderModule``
        or in the Stable Diffusion layout, or ``tiny``; ``None`` takes the pretrained one.
    text_encoder_config: keyword arguments of ``TextConditioner.tiny`` when ``tiny``.
    layout: U-Net input of eq. 5: ``paper``, ``paper_mask`` or ``inpaint``.
    prompt_mode: prompt ablation: ``none``, ``positive``, ``negative`` or ``dual``.
    loss: ``combined`` (eq. 7: MSE on the eq. 6 combination) or ``branches`` (standard
        CFG training: MSE on the positive branch, prompts dropped to "" at random).
    w_train: guidance weight inside the eq. 7 loss (``combined`` only).
    w: guidance weight for sampling (validation, ``remove``).
    prompt_dropout: probability of replacing a prompt by "" (``branches`` only).
    lr: learning rate of the U-Net (Adam, as the paper; AdamW when ``weight_decay`` > 0).
    text_lr: learning rate of the text encoder for joint fine-tuning; ``None`` freezes it.
    weight_decay: AdamW weight decay.
    ema_decay: EMA decay of the U-Net weights; ``None`` disables EMA.
    snr_gamma: Min-SNR loss weighting γ (5.0 is the usual value); ``None`` disables it.
    noise_schedule: overrides of the DDPM training schedule.
    sampler: ``ddim``, ``dpmsolver++``, ``euler`` or ``ddpm`` for validation sampling.
    val_steps: sampling steps in validation.
    seed: seed of the validation noise (sampling and denoising loss).
    grid_samples: how many validation samples go into the logged image grid.
    attention: attention kernel of the U-Net and VAE: ``sdpa`` (PyTorch's
        ``scaled_dot_product_attention``, diffusers' default) or ``classic`` (explicit
        softmax, the reference).
    channels_last: store the U-Net's conv weights channels-last (NHWC): faster
        convolutions on tensor-core GPUs under bf16 / fp16.
    gradient_checkpointing: recompute the U-Net's activations in the backward pass
        instead of storing them: less memory (bigger batches at 512 px), ~30% more time.
    compile_unet: ``torch.compile`` the U-Net (and its EMA copy) when a Trainer sets the
        module up; the first steps pay for the compilation.
    compile_options: keyword arguments of ``torch.compile`` (e.g. ``{"mode":
        "max-autotune"}``); needs ``compile_unet``.
    fused_optimizer: PyTorch's fused Adam / AdamW kernel (falls back with a warning
        where there is none).
    cache_encodings: keep the frozen encoders' outputs (target posterior, condition
        latents, prompt states) in memory, keyed by content, and reuse them when an input
        repeats; the loss is the same. Refused while the text encoder trains.
    cache_gib: memory the encoding cache may hold (per process, on the model's device).
"""
