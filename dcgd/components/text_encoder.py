"""The conditioning text encoder ``τθ``: prompts in, cross-attention states out.

Stable Diffusion's convention: a transformers ``CLIPTextModel`` whose last hidden states are
the U-Net's ``encoder_hidden_states``, saved as ``text_encoder/`` + ``tokenizer/``. The
``TextEncoderModule`` fine-tunes it and saves it in this layout, so the DCGD module loads a
fine-tuned encoder exactly as it loads Stable Diffusion's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dcgd.components.loading import from_pretrained
from dcgd.components.tokenizer import check_tokenizer, clip_tokenizer_from_open_clip, load_tokenizer


class TextConditioner(nn.Module):
    """Tokenizer + CLIP text transformer, one call from prompts to hidden states."""

    def __init__(self, model: CLIPTextModel, tokenizer: CLIPTokenizer) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = check_tokenizer(tokenizer, "the text conditioner")
        self.max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """``[B, max_length]`` token ids, padded and truncated like Stable Diffusion."""
        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return ids.to(self.model.device)

    def encode_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).last_hidden_state

    def forward(self, prompts: list[str]) -> torch.Tensor:
        """``[B, L, D]`` last hidden states: the U-Net's ``encoder_hidden_states``."""
        return self.encode_ids(self.tokenize(prompts))

    def pooled(self, prompts: list[str]) -> torch.Tensor:
        """``[B, D]`` pooled output (the end-of-text token), for contrastive alignment."""
        return self.model(input_ids=self.tokenize(prompts)).pooler_output

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``text_encoder/`` and ``tokenizer/`` (the Stable Diffusion layout)."""
        directory = Path(directory)
        self.model.save_pretrained(directory / "text_encoder")
        self.tokenizer.save_pretrained(directory / "tokenizer")

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str,
        text_encoder_subfolder: str | None = "text_encoder",
        tokenizer: str | None = None,
        tokenizer_subfolder: str | None = "tokenizer",
    ) -> TextConditioner:
        """Load from a Stable Diffusion repo/directory (hub id or local path).

        ``tokenizer`` overrides where the tokenizer comes from (another path, or ``"open_clip"``).
        """
        model = from_pretrained(
            CLIPTextModel, path_or_id, text_encoder_subfolder, "a CLIP text encoder"
        )
        if tokenizer is None:
            tok = load_tokenizer(path_or_id, tokenizer_subfolder)
        else:
            tok = load_tokenizer(tokenizer)
        return cls(model, tok)

    @classmethod
    def tiny(
        cls,
        hidden_size: int = 32,
        num_layers: int = 2,
        num_heads: int = 2,
        max_length: int = 16,
        seed: int = 0,
    ) -> TextConditioner:
        """A small randomly initialised CLIP text tower with CLIP's real BPE tokenizer.

        For tests and the quick start. The vocabulary is CLIP's full 49408 tokens, so the
        same prompts tokenize exactly as with a pretrained CLIP; the 16-token context is
        enough for the short prompts the describers write.
        """
        config = CLIPTextConfig(
            vocab_size=49408,
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 4,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            max_position_embeddings=max_length,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = CLIPTextModel(config)
        return cls(model, clip_tokenizer_from_open_clip(model_max_length=max_length))
