"""Describers: what turns (source, mask) into ``T_info`` / ``T_mask``, the prompts of eq. 6.

The interface and the label describer (``base``), zero-shot CLIP ranking of the region and
its context (``clip_describer``, ``regions``, ``vocabulary``), the open_clip models it uses
and their contrastive training (``clip_model``, ``clip_training``, ``contrastive``), and the
description cache on disk (``cache``). The conditioning text encoder ``τθ`` is a component
(``dcgd.components.text_encoder``), not a describer.
"""
