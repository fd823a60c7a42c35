"""The search space of a sweep: one ``Param`` per swept key, parsed from the spec's YAML.

A param is written as
    w: {low: 0.5, high: 8.0, log: true}          # float range (``step`` makes it discrete)
    val_steps: {low: 5, high: 50, type: int}      # int range
    prompt_mode: {choices: [none, positive, negative, dual]}
    prompt_mode: [none, positive, negative, dual] # a list is short for choices
Every mistake raises ``ConfigError`` naming the key, before any trial runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

from dcgd.errors import ConfigError

Value = bool | int | float | str | None


@dataclass(frozen=True)
class Param:
    """One swept key: a categorical, or an int / float range (linear or log, optional step)."""

    name: str
    choices: tuple[Value, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: optuna.trial.BaseTrial) -> Value:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            step = int(self.step or 1)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list[Value]:
        """The values a grid sampler walks through; only discrete params have them."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None and not self.integer:
            raise ConfigError(
                f"search_space.{self.name}: the grid sampler needs discrete values; write "
                f"choices: [...] or give a step"
            )
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values = [self.low + i * step for i in range(count)]
        return [int(v) for v in values] if self.integer else [round(v, 12) for v in values]

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.name} in {list(self.choices)}"
        kind = "int" if self.integer else "float"
        extra = ", log" if self.log else ""
        extra += f", step {self.step:g}" if self.step else ""
        return f"{self.name}: {kind} [{self.low:g}, {self.high:g}]{extra}"


_RANGE_KEYS = {"low", "high", "log", "step", "type"}


def parse_param(name: str, raw: Any) -> Param:
    where = f"search_space.{name}"
    if isinstance(raw, list):
        raw = {"choices": raw}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: write a range {{low: ..., high: ...}} or choices: [...], got {raw!r}"
        )
    if "choices" in raw:
        extra = set(raw) - {"choices"}
        if extra:
            raise ConfigError(f"{where}: choices cannot be combined with {sorted(extra)}")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices is empty; list at least one value")
        bad = [c for c in choices if not isinstance(c, bool | int | float | str | type(None))]
        if bad:
            raise ConfigError(f"{where}: choices must be numbers or strings, got {bad!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices {choices} repeat a value")
        return Param(name, choices=tuple(choices))
    unknown = set(raw) - _RANGE_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {sorted(unknown)}; a range takes low, high, log, step, "
            "type (float or int)"
        )
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"{where}: a range needs both low and high")
    kind = raw.get("type", "float")
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}: type must be float or int, got {kind!r}")
    try:
        low, high = float(raw["low"]), float(raw["high"])
        step = None if raw.get("step") is None else float(raw["step"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: low, high and step must be numbers") from None
    log = bool(raw.get("log", False))
    if not low < high:
        raise ConfigError(f"{where}: empty range [{low:g}, {high:g}]; low must be below high")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low:g}")
    if step is not None:
        if step <= 0 or step > high - low:
            raise ConfigError(f"{where}: step {step:g} must be in (0, high - low = {high - low:g}]")
        if log:
            raise ConfigError(f"{where}: step and log cannot be combined (Optuna refuses it)")
    integer = kind == "int"
    if integer and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"{where}: an int range needs integer low and high")
    return Param(name, low=low, high=high, log=log, step=step, integer=integer)


def parse_space(raw: Any) -> tuple[Param, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            "search_space is missing or empty; give at least one key, e.g. "
            "search_space: {w: {low: 1.0, high: 8.0, log: true}}"
        )
    return tuple(parse_param(str(name), value) for name, value in raw.items())
