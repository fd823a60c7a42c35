"""Inference: the dual-guidance sampler and the tools built on it (`remove`)."""
