"""TextEncoderModule: InfoNCE against the frozen CLIP lowers; its output is the U-Net's τθ."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from dcgd.components.text_encoder import TextConditioner
from dcgd.describe.base import attach_descriptions
from dcgd.describe.contrastive import info_nce, region_text_pairs
from dcgd.describe.regions import clip_normalize
from dcgd.errors import ConfigError
from dcgd.training.module import DCGDModule
from dcgd.training.text_encoder import TextEncoderModule
from tests.clip import eval_batch, one_thread, procedural_data

pytestmark = pytest.mark.slow  # uses the session's trained CLIP

STEPS = 40


def _described(datamodule, split="val"):
    return attach_descriptions(eval_batch(datamodule, split), datamodule.describer)


@torch.no_grad()
def _loss(module, batch) -> float:
    training = module.training
    module.eval()
    loss = float(module.contrastive_loss(batch))
    module.train(training)
    return loss


def test_alignment_lowers_the_contrastive_loss_and_saves_a_loadable_encoder(trained_clip, tmp_path):
    data = procedural_data(paste_probability=0.5)
    held_out = _described(data)  # never trained on: another seed stream
    torch.manual_seed(0)
    module = TextEncoderModule(
        text_encoder={"hidden_size": 32, "seed": 0},
        clip_model=str(trained_clip),
        lr=1e-3,
        save_dir=str(tmp_path / "tau"),
    )
    before = _loss(module, held_out)
    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    with one_thread():
        trainer.fit(module, data)
    after = _loss(module, held_out)
    print(f"InfoNCE on held-out pairs: {before:.3f} -> {after:.3f} after {STEPS} steps")
    assert after < 0.8 * before

    # on_train_end saved τθ in the Stable Diffusion layout; the DCGD module loads it.
    saved = tmp_path / "tau"
    assert (saved / "text_encoder" / "config.json").is_file()
    assert (saved / "tokenizer").is_dir()
    dcgd = DCGDModule(
        latent_space="pixel",
        unet_config={"block_out_channels": [8, 16]},
        text_encoder=str(saved),
        ema_decay=None,
        text_lr=1e-5,
    )
    prompts = ["red circle", "brick wall with blue squares"]
    with torch.no_grad():
        torch.testing.assert_close(dcgd.text(prompts), module.text(prompts))
    # Stage (b): the diffusion loss reaches the loaded encoder (joint fine-tuning).
    batch = _described(procedural_data(size=16, buckets=["0.1-0.2"], val_per_bucket=2))
    dcgd.diffusion_loss(batch, torch.Generator().manual_seed(0)).backward()
    grads = [p.grad for p in dcgd.text.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_starting_from_the_clip_text_tower_starts_aligned(trained_clip):
    """``text_encoder: clip`` converts the tower exactly: its first loss is CLIP's own."""
    module = TextEncoderModule(text_encoder="clip", clip_model=str(trained_clip))
    batch = _described(procedural_data())
    images, texts = region_text_pairs(batch, module.clip.image_size)
    clip = module.clip.model
    with torch.no_grad():
        image_emb = clip.encode_image(clip_normalize(images, module.clip.mean, module.clip.std))
        text_emb = clip.encode_text(module.clip.tokenize(texts))
        expected = info_nce(
            F.normalize(text_emb, dim=-1), image_emb, texts, clip.logit_scale.exp().clamp(max=100)
        )
    assert _loss(module, batch) == pytest.approx(float(expected), rel=1e-4)


def test_trainable_layers_freeze_the_rest(trained_clip):
    module = TextEncoderModule(
        text_encoder={"hidden_size": 32, "num_layers": 3},
        clip_model=str(trained_clip),
        trainable_layers=1,
    )
    trainable = {n for n, p in module.text.model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("encoder.layers.2.", "final_layer_norm.")) for n in trainable
    )
    assert all(p.requires_grad for p in module.projection.parameters())
    with pytest.raises(ConfigError, match="trainable_layers must be"):
        TextEncoderModule(text_encoder="tiny", clip_model=str(trained_clip), trainable_layers=7)


def test_a_clip_is_required(tmp_path):
    with pytest.raises(ConfigError, match="needs the CLIP"):
        TextEncoderModule(text_encoder="tiny")


def test_saved_encoder_round_trips(tmp_path):
    text = TextConditioner.tiny(seed=1)
    text.save_pretrained(tmp_path)
    loaded = TextConditioner.from_pretrained(str(tmp_path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(["green star"]), text(["green star"]))
