"""CLIP tokenizers that are never silently empty.

``CLIPTokenizer.from_pretrained(<hub id>)`` offline can hand back a tokenizer with only its
special tokens (``len == 2``) and no error; prompts then encode to nothing and training runs on
garbage. Every tokenizer dcgd uses passes :func:`check_tokenizer`.

open_clip ships CLIP's BPE vocabulary inside the wheel, so a real CLIP tokenizer (the exact ids
of OpenAI CLIP / Stable Diffusion) can always be built offline: :func:`clip_tokenizer_from_open_clip`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from transformers import CLIPTokenizer

from dcgd.components.loading import from_pretrained
from dcgd.errors import ModelLoadError

# CLIP's BPE vocabulary has 49408 entries; anything far below that is not a CLIP tokenizer.
MIN_VOCAB_SIZE = 1000


def check_tokenizer(tokenizer: CLIPTokenizer, origin: str) -> CLIPTokenizer:
    """Raise if ``tokenizer`` is empty or cannot encode a plain word; return it otherwise."""
    size = len(tokenizer)
    ids = tokenizer("a photo of a cat", add_special_tokens=False)["input_ids"]
    if size < MIN_VOCAB_SIZE or not ids or tokenizer.unk_token_id in ids:
        raise ModelLoadError(
            f"the tokenizer loaded from {origin!r} is empty or broken (vocabulary size {size}). "
            "Offline, transformers can return a tokenizer with only special tokens instead of "
            "raising. Point the config at a local directory holding a saved CLIP tokenizer "
            "(tokenizer.json, or vocab.json + merges.txt), or write one offline from the BPE "
            "vocabulary open_clip ships: dcgd.components.tokenizer.clip_tokenizer_from_open_clip()"
            ".save_pretrained(<dir>/tokenizer)."
        )
    return tokenizer


def clip_tokenizer_from_open_clip(model_max_length: int = 77) -> CLIPTokenizer:
    """CLIP's tokenizer built from the BPE file open_clip ships (same ids as OpenAI CLIP).

    It pads with ``<|endoftext|>`` like Stable Diffusion 1.x; open_clip pads with id 0 (``!``),
    but a ``!`` pad token would also be matched inside prompts ("stop!" -> pad id).
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges_text = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    # Same slice as open_clip's SimpleTokenizer: 48894 merges after the header line.
    merges = [tuple(m.split()) for m in merges_text[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(bytes_to_unicode().values())
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars]
    vocab_list += ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    return check_tokenizer(tokenizer, "open_clip's bundled BPE vocabulary")


def load_tokenizer(path_or_id: str, subfolder: str | None = None) -> CLIPTokenizer:
    """A CLIP tokenizer from a hub id or local directory (or ``"open_clip"``), checked."""
    if path_or_id == "open_clip":
        return clip_tokenizer_from_open_clip()
    tokenizer = from_pretrained(CLIPTokenizer, path_or_id, subfolder, "a CLIP tokenizer")
    origin = str(Path(path_or_id) / subfolder) if subfolder else path_or_id
    return check_tokenizer(tokenizer, origin)
