"""Text side of DCGD: tokenizers, the conditioning text encoder, region describers, caches."""
