"""Where modules moved when the layout became the one in ARCHITECTURE.md (dcgd 0.1 -> 0.2).

Configs and run directories written before name classes by their old module path
(``dcgd.text.describer_base.LabelDescriber``); loading one fails with "No module named
'dcgd.text'"; :func:`moved_hint` says what to write instead.
"""

from __future__ import annotations

import re

MOVED: dict[str, str] = {
    "dcgd.models.layouts": "dcgd.method.input",
    "dcgd.models.guidance": "dcgd.method.guidance",
    "dcgd.models.prediction": "dcgd.method.loss",
    "dcgd.training.randomness": "dcgd.method.randomness",
    "dcgd.models.unet": "dcgd.components.unet",
    "dcgd.models.latent_space": "dcgd.components.latent_space",
    "dcgd.models.schedulers": "dcgd.components.schedulers",
    "dcgd.models.attention": "dcgd.components.attention",
    "dcgd.text.conditioner": "dcgd.components.text_encoder",
    "dcgd.text.tokenizer": "dcgd.components.tokenizer",
    "dcgd.text.convert": "dcgd.training.open_clip_text",
    "dcgd.text.finetune": "dcgd.training.text_encoder",
    "dcgd.text.describer_base": "dcgd.describe.base",
    "dcgd.text.describer": "dcgd.describe.clip_describer",
    "dcgd.text.cache": "dcgd.describe.cache",
    "dcgd.text.clip_model": "dcgd.describe.clip_model",
    "dcgd.text.clip_training": "dcgd.describe.clip_training",
    "dcgd.text.contrastive": "dcgd.describe.contrastive",
    "dcgd.text.regions": "dcgd.describe.regions",
    "dcgd.text.vocabulary": "dcgd.describe.vocabulary",
    "dcgd.training.switch_bench": "dcgd.benchmarks.switches",
    "dcgd.training.metrics": "dcgd.training.sample_mean",
    "dcgd.eval.lightning": "dcgd.eval.table_callback",
    "dcgd.sweeps.tracking": "dcgd.tracking.sweeps",
    "dcgd.commands.app": "dcgd.cli.app",
    "dcgd.commands.bench": "dcgd.cli.bench",
    "dcgd.commands.benchmark": "dcgd.cli.benchmark",
    "dcgd.commands.compare": "dcgd.cli.compare",
    "dcgd.commands.describe": "dcgd.cli.describe",
    "dcgd.commands.evaluate": "dcgd.cli.evaluate",
    "dcgd.commands.export": "dcgd.cli.export",
    "dcgd.commands.masks": "dcgd.cli.masks",
    "dcgd.commands.remove": "dcgd.cli.remove",
    "dcgd.commands.sweep": "dcgd.cli.sweep",
}
_OLD = re.compile(
    "|".join(re.escape(k) for k in sorted(MOVED, key=len, reverse=True)) + r"(?![\w])"
)


def moved_hint(message: str) -> str:
    """One line saying which old module paths ``message`` (a config error) names and where
    each is now, or "" when it names none."""
    found = dict.fromkeys(_OLD.findall(message))
    if not found:
        return ""
    moves = "; ".join(f"{old} is now {MOVED[old]}" for old in found)
    return f"the config names a module of an older dcgd layout ({moves}): replace it in the config"
