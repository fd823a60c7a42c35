"""open_clip text tower -> transformers ``CLIPTextModel`` (the Stable Diffusion convention).

Stable Diffusion 2 did exactly this with OpenCLIP ViT-H: the U-Net reads the last hidden
states (after the final layer norm) of the text transformer. Converting the describer's own
open_clip text tower gives a ``TextConditioner`` whose hidden states equal open_clip's, so
fine-tuning can start from the CLIP that already matches the image embeddings, and the
result loads wherever a ``CLIPTextModel`` does.

Supported: open_clip's standard text transformer (causal mask, end-of-text pooling, GELU or
QuickGELU, no LayerScale): OpenAI CLIP, LAION OpenCLIP ViT-*, and dcgd's tiny CLIPs. Towers
that are Hugging Face models already (``hf-hub`` text encoders such as XLM-R), or pool
another way (SigLIP), are refused with a clear error.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from dcgd.components.text_encoder import TextConditioner
from dcgd.components.tokenizer import clip_tokenizer_from_open_clip
from dcgd.describe.clip_model import LoadedClip
from dcgd.errors import ModelLoadError


def _text_tower(clip: nn.Module) -> nn.Module:
    """The module holding the text transformer (``CLIP`` itself, or ``CustomTextCLIP.text``)."""
    tower = getattr(clip, "text", clip)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    if not all(hasattr(tower, name) for name in needed):
        raise ModelLoadError(
            f"this open_clip model's text tower ({type(tower).__name__}) is not open_clip's "
            "standard text transformer; only those convert to a CLIPTextModel. Load a Hugging "
            "Face text encoder directly with TextConditioner.from_pretrained instead."
        )
    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
    if pool != "argmax" or getattr(tower, "attn_mask", None) is None:
        raise ModelLoadError(
            f"the open_clip text tower pools with {pool!r} and/or has no causal mask; a "
            "CLIPTextModel pools at the end-of-text token behind a causal mask, so it cannot "
            "reproduce this tower."
        )
    if getattr(tower, "cls_emb", None) is not None:
        raise ModelLoadError("open_clip text towers with a CLS embedding cannot be converted.")
    return tower


def _activation(block: nn.Module) -> str:
    from open_clip.transformer import QuickGELU

    act = block.mlp.gelu
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    raise ModelLoadError(f"unsupported activation {type(act).__name__} in the text tower.")


def text_config_from_open_clip(clip: LoadedClip) -> CLIPTextConfig:
    tower = _text_tower(clip.model)
    blocks = tower.transformer.resblocks
    block = blocks[0]
    if not isinstance(block.ls_1, nn.Identity) or not isinstance(block.attn, nn.MultiheadAttention):
        raise ModelLoadError(
            "open_clip text blocks with LayerScale or custom attention differ "
            "from CLIP's and cannot be converted."
        )
    width = tower.token_embedding.weight.shape[1]
    return CLIPTextConfig(
        vocab_size=tower.token_embedding.weight.shape[0],
        hidden_size=width,
        intermediate_size=block.mlp.c_fc.out_features,
        num_hidden_layers=len(blocks),
        num_attention_heads=block.attn.num_heads,
        max_position_embeddings=tower.positional_embedding.shape[0],
        hidden_act=_activation(block),
        layer_norm_eps=tower.ln_final.eps,
        projection_dim=_projection(tower).shape[1],
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def _projection(tower: nn.Module) -> torch.Tensor:
    """``[width, embed_dim]`` text projection (identity when the tower has none)."""
    proj = getattr(tower, "text_projection", None)
    width = tower.token_embedding.weight.shape[1]
    if proj is None:
        return torch.eye(width)
    if isinstance(proj, nn.Linear):
        if proj.bias is not None:
            raise ModelLoadError("a text projection with a bias cannot be converted.")
        return proj.weight.detach().T
    return proj.detach()


def _state_dict(tower: nn.Module) -> dict[str, torch.Tensor]:
    out = {
        "embeddings.token_embedding.weight": tower.token_embedding.weight,
        "embeddings.position_embedding.weight": tower.positional_embedding,
        "final_layer_norm.weight": tower.ln_final.weight,
        "final_layer_norm.bias": tower.ln_final.bias,
    }
    for i, block in enumerate(tower.transformer.resblocks):
        p = f"encoder.layers.{i}."
        q, k, v = block.attn.in_proj_weight.chunk(3)
        qb, kb, vb = block.attn.in_proj_bias.chunk(3)
        out |= {
            p + "self_attn.q_proj.weight": q,
            p + "self_attn.q_proj.bias": qb,
            p + "self_attn.k_proj.weight": k,
            p + "self_attn.k_proj.bias": kb,
            p + "self_attn.v_proj.weight": v,
            p + "self_attn.v_proj.bias": vb,
            p + "self_attn.out_proj.weight": block.attn.out_proj.weight,
            p + "self_attn.out_proj.bias": block.attn.out_proj.bias,
            p + "layer_norm1.weight": block.ln_1.weight,
            p + "layer_norm1.bias": block.ln_1.bias,
            p + "mlp.fc1.weight": block.mlp.c_fc.weight,
            p + "mlp.fc1.bias": block.mlp.c_fc.bias,
            p + "mlp.fc2.weight": block.mlp.c_proj.weight,
            p + "mlp.fc2.bias": block.mlp.c_proj.bias,
            p + "layer_norm2.weight": block.ln_2.weight,
            p + "layer_norm2.bias": block.ln_2.bias,
        }
    return {k: v.detach().clone().float() for k, v in out.items()}


def text_conditioner_from_open_clip(clip: LoadedClip) -> tuple[TextConditioner, torch.Tensor]:
    """The open_clip text tower as a ``TextConditioner``, and its ``[width, embed_dim]``
    projection into CLIP's joint space (``pooled @ projection`` = open_clip's text embedding).

    Hidden states equal open_clip's up to the end-of-text token; after it they differ only
    because the tokenizer pads with end-of-text (SD 1.x) where open_clip pads with 0.

    Save the conditioner with ``save_pretrained(dir)``: ``DCGDModule(text_encoder=dir)`` and
    ``CLIPTextModel.from_pretrained(dir, subfolder="text_encoder")`` load it.
    """
    tower = _text_tower(clip.model)
    config = text_config_from_open_clip(clip)
    model = CLIPTextModel(config)
    missing, unexpected = model.load_state_dict(_state_dict(tower), strict=False)
    # position_ids is a buffer some versions keep; anything else missing is a bug here.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelLoadError(f"open_clip -> CLIPTextModel mapping failed: {missing, unexpected}")
    tokenizer = clip_tokenizer_from_open_clip(model_max_length=config.max_position_embeddings)
    return TextConditioner(model, tokenizer), _projection(tower).clone().float()
