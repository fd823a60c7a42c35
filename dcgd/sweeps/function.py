"""Function trials: any Python callable as the objective, through the same runner and storage.

    kind: function
    function: {target: mypackage.bench:score, args: {size: 256}}

The callable is called as ``target(params, context, **args)`` and returns the metrics
``{metric: {bucket: value}}``, a ``TrialResult``, or a plain number (logged as ``value/all``).
Useful for objectives dcgd does not know (a benchmark, an external evaluation) and for
exercising the sweep machinery cheaply.
"""

from __future__ import annotations

import importlib
from numbers import Real
from typing import TYPE_CHECKING, Any

from dcgd.errors import ConfigError, DCGDError
from dcgd.sweeps.runner import TrialContext, TrialResult
from dcgd.sweeps.spec import SweepSpec

if TYPE_CHECKING:
    from collections.abc import Callable


def load_target(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"function.target {target!r} must look like package.module:callable")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"function.target: cannot import {module_name!r} ({err})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"function.target: {module_name} has no callable {attr!r}")
    return fn


class FunctionTrials:
    def __init__(self, spec: SweepSpec) -> None:
        self.target = str(spec.function["target"])
        self.args = dict(spec.function.get("args") or {})
        unknown = set(spec.function) - {"target", "args"}
        if unknown:
            raise ConfigError(f"function: unknown field(s) {sorted(unknown)}; use target, args")
        self.fn = None

    def prepare(self) -> None:
        self.fn = load_target(self.target)

    def fixed_params(self) -> dict[str, Any]:
        return {"function": self.target}

    def run(self, params: dict[str, Any], context: TrialContext) -> TrialResult:
        out = self.fn(dict(params), context, **self.args)
        if isinstance(out, TrialResult):
            return out
        if isinstance(out, Real):
            return TrialResult({"value": {"all": float(out)}})
        if isinstance(out, dict):
            return TrialResult(out)
        raise DCGDError(f"{self.target} returned {type(out).__name__}; return metrics or a number")
