"""The number a sweep optimises: one validation metric on one bucket, or a weighted mix.

    objective: {metric: lpips_alex, bucket: 0.3-0.4, direction: minimize}
    objective:
      direction: minimize
      terms:
        - {metric: lpips_alex, bucket: 0.3-0.4, weight: 1.0}
        - {metric: mae, bucket: all, weight: 2.0}

Metrics are what a trial returns: ``{metric: {bucket: mean, ..., "all": mean}}``. A mix is
the plain weighted sum; give a term a negative weight to turn "higher is better" around.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dcgd.errors import ConfigError, DCGDError

DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class Term:
    metric: str
    bucket: str = "all"
    weight: float = 1.0

    @property
    def key(self) -> str:
        return f"{self.metric}/{self.bucket}"


@dataclass(frozen=True)
class Objective:
    terms: tuple[Term, ...]
    direction: str

    def value(self, metrics: Mapping[str, Mapping[str, float]]) -> float:
        total = 0.0
        for term in self.terms:
            value = metrics.get(term.metric, {}).get(term.bucket)
            if value is None:
                raise DCGDError(
                    f"the trial produced no {term.key} (it has {sorted(metrics)}); the objective "
                    "cannot be computed"
                )
            total += term.weight * float(value)
        if math.isnan(total):
            raise DCGDError(
                f"the objective ({self.describe()}) is NaN: a bucket of the objective holds no "
                "validation image; add images to that bucket (data val_per_bucket) or pick another"
            )
        return total

    def describe(self) -> str:
        parts = [t.key if t.weight == 1.0 else f"{t.weight:g}*{t.key}" for t in self.terms]
        return f"{self.direction} {' + '.join(parts)}"

    def check(self, metrics: Iterable[str], buckets: Iterable[str], where: str) -> None:
        """Fail early when a term names a metric or bucket the trials will not produce."""
        metrics, buckets = list(metrics), [*buckets, "all"]
        for term in self.terms:
            if term.metric not in metrics:
                raise ConfigError(
                    f"objective metric {term.metric!r} is not computed by {where}; "
                    f"choose one of {', '.join(metrics)}"
                )
            if term.bucket not in buckets:
                raise ConfigError(
                    f"objective bucket {term.bucket!r} is not one of {', '.join(buckets)}"
                )


def _term(raw: Any, where: str) -> Term:
    if not isinstance(raw, dict) or "metric" not in raw:
        raise ConfigError(f"{where}: write {{metric: NAME, bucket: LO-HI or all, weight: 1.0}}")
    unknown = set(raw) - {"metric", "bucket", "weight"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    try:
        weight = float(raw.get("weight", 1.0))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: weight must be a number") from None
    return Term(str(raw["metric"]), str(raw.get("bucket", "all")), weight)


def parse_objective(raw: Any) -> Objective:
    if not isinstance(raw, dict):
        raise ConfigError(
            "objective is missing; e.g. objective: {metric: lpips_alex, bucket: 0.3-0.4, "
            "direction: minimize}"
        )
    direction = raw.get("direction")
    if direction not in DIRECTIONS:
        raise ConfigError(f"objective.direction must be minimize or maximize, got {direction!r}")
    if "terms" in raw:
        if set(raw) - {"terms", "direction"}:
            raise ConfigError("objective: give either metric/bucket or terms, not both")
        if not isinstance(raw["terms"], list) or not raw["terms"]:
            raise ConfigError("objective.terms must be a non-empty list")
        terms = tuple(_term(t, f"objective.terms[{i}]") for i, t in enumerate(raw["terms"]))
    else:
        terms = (_term({k: v for k, v in raw.items() if k != "direction"}, "objective"),)
    return Objective(terms, direction)
