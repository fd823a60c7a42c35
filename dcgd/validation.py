"""Checks at the boundary, shared by the commands and the config classes.

Numbers: :func:`finite` and :func:`whole` turn a NaN, an infinity, a negative count or a
probability of 1.5 into one ``ConfigError`` line naming the option, before anything runs on it
(a NaN learning rate trains for hours to nothing; a bucket above 1 searched forever).

Files have their own boundary: ``dcgd.files`` (never over a result unless told, never half
written); devices: ``dcgd.devices``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from dcgd.errors import ConfigError


def _bounds_text(
    low: float | None, high: float | None, low_open: bool = False, high_open: bool = False
) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'greater than' if low_open else 'at least'} {low:g}"
    if high is not None:
        return f"{'less than' if high_open else 'at most'} {high:g}"
    return ""


def finite(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float when it is a finite number within ``[low, high]`` (either end
    open with ``low_open`` / ``high_open``); else a ConfigError naming ``name``."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        number = float(value)
        ok = (low is None or (number > low if low_open else number >= low)) and (
            high is None or (number < high if high_open else number <= high)
        )
    if not ok:
        bounds = _bounds_text(low, high, low_open, high_open)
        raise ConfigError(
            f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}"
        )
    return number


def whole(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int when it is a whole number within ``[low, high]``; else a
    ConfigError naming ``name`` (a bool or 2.5 is not a count)."""
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    if ok:
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if low is not None and high is not None:
            bounds = f"from {low} to {high}"
        elif low is not None:
            bounds = f"at least {low}"
        elif high is not None:
            bounds = f"at most {high}"
        else:
            bounds = "a whole number"
        raise ConfigError(f"{name} must be {bounds}, got {value!r}")
    return int(value)
