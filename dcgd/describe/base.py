"""The describer interface: what turns (source, mask) into the two prompts of eq. 6.

``T_mask`` (NEGATIVE prompt) describes the region to remove, ``T_info`` (POSITIVE prompt) the
rest of the image. A describer sees only ``source`` and ``mask`` (and dataset labels when it
is the label describer): never ``target``, so the ground truth cannot leak into a prompt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Description:
    t_info: str
    t_mask: str
    # Scores behind the text (e.g. CLIP similarities per candidate), for logging.
    scores: dict[str, Any] = field(default_factory=dict)


class Describer(ABC):
    """Produces one :class:`Description` per sample of a batch."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes the output; part of the cache key."""

    @abstractmethod
    def describe(self, batch: dict[str, Any]) -> list[Description]:
        """Describe ``batch['source']`` ``[B,3,H,W]`` in [-1,1] under ``batch['mask']`` ``[B,1,H,W]``."""


class LabelDescriber(Describer):
    """Uses the labels a built-in dataset knows (``object_label``, ``scene_label``).

    For the quick start and debugging: exact descriptions with no CLIP at all. Real data has
    no labels; there, use the CLIP describer.
    """

    def __init__(self, mask_template: str = "{}", info_template: str = "{}") -> None:
        self.mask_template = mask_template
        self.info_template = info_template

    def settings(self) -> dict[str, Any]:
        return {"kind": "labels", "mask": self.mask_template, "info": self.info_template}

    def describe(self, batch: dict[str, Any]) -> list[Description]:
        if "object_label" not in batch or "scene_label" not in batch:
            from dcgd.errors import DataError

            raise DataError(
                "the label describer needs 'object_label' and 'scene_label' in each sample; "
                "only the built-in procedural data has them. Use describer: clip for real data."
            )
        return [
            Description(
                t_info=self.info_template.format(scene) if scene else "",
                t_mask=self.mask_template.format(obj) if obj else "",
            )
            for obj, scene in zip(batch["object_label"], batch["scene_label"], strict=True)
        ]


def attach_descriptions(batch: dict[str, Any], describer: Describer | None) -> dict[str, Any]:
    """Add ``t_info`` / ``t_mask`` lists to a batch (no-op when already there or no describer)."""
    if describer is None or "t_info" in batch:
        return batch
    descriptions = describer.describe(batch)
    batch["t_info"] = [d.t_info for d in descriptions]
    batch["t_mask"] = [d.t_mask for d in descriptions]
    return batch
