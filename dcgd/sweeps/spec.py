"""The sweep spec: a YAML file that says what to vary, how to search and what to optimise.

    study: quickstart-ablation         # Optuna study name (default: the file name)
    kind: inference                    # inference | training | function
    n_trials: 12                       # a grid defaults to its size
    sampler: grid                      # tpe | grid | random, or {name: tpe, seed: 0, ...}
    search_space: {...}                # dcgd.sweeps.space
    objective: {...}                   # dcgd.sweeps.objective
    pruning: {pruner: median, monitor: val/loss}   # training sweeps
    storage: {heartbeat_interval: 60, max_retry: 2}
    tracking: {experiment: NAME}       # MLflow; URI from here or MLFLOW_TRACKING_URI
    inference: {...}                   # how a checkpoint is sampled and scored
    training: {config: [...], args: [...]}          # training sweeps
    function: {target: pkg.module:callable, args: {...}}   # any Python objective

Everything that can be checked without loading a model is checked here, so that a bad spec
fails in a second with one line naming the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from dcgd.errors import ConfigError
from dcgd.files import read_yaml
from dcgd.sweeps.objective import Objective, parse_objective
from dcgd.sweeps.space import Param, parse_space

KINDS = ("inference", "training", "function")
SAMPLERS = ("tpe", "grid", "random")
PRUNERS = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
}
TOP_KEYS = {
    "study",
    "kind",
    "n_trials",
    "sampler",
    "search_space",
    "objective",
    "pruning",
    "storage",
    "tracking",
    "inference",
    "training",
    "function",
}

# What an inference trial can vary: the sampling settings of DCGDModule.sample.
INFERENCE_KEYS = ("w", "prompt_mode", "steps", "sampler", "seed", "use_ema")


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` after the last point: that call only
    works inside ``study.optimize``, and the sweep runner stops at an exhausted grid itself."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        pass


@dataclass(frozen=True)
class StorageSettings:
    url: str | None = None  # None: sqlite:///sweeps/optuna.db (see dcgd.sweeps.storage)
    heartbeat_interval: int = 60
    grace_period: int | None = None  # None: 2 x heartbeat_interval (Optuna's default)
    max_retry: int | None = 2
    wait_for_running: bool = True  # a worker waits for its peers' trials (it may retry them)


@dataclass(frozen=True)
class SweepSpec:
    study: str
    kind: str
    n_trials: int
    sampler: dict[str, Any]
    space: tuple[Param, ...]
    objective: Objective
    pruning: dict[str, Any]
    storage: StorageSettings
    experiment: str
    tracking_uri: str | None
    inference: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    function: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.space]

    def grid(self) -> dict[str, list]:
        return {p.name: p.grid() for p in self.space}

    def grid_size(self) -> int:
        size = 1
        for values in self.grid().values():
            size *= len(values)
        return size

    def build_sampler(self) -> optuna.samplers.BaseSampler:
        options = {k: v for k, v in self.sampler.items() if k != "name"}
        name = self.sampler["name"]
        try:
            if name == "grid":
                return GridSampler(self.grid(), **options)
            if name == "random":
                return optuna.samplers.RandomSampler(**options)
            return optuna.samplers.TPESampler(**options)
        except TypeError as err:
            raise ConfigError(f"sampler {name}: {err}") from None

    def build_pruner(self) -> optuna.pruners.BasePruner:
        return build_pruner(self.pruning)

    def with_overrides(self, n_trials: int | None = None, storage: str | None = None) -> SweepSpec:
        """The spec with the command line's ``--n-trials`` / ``--storage`` applied."""
        spec = self
        if n_trials is not None:
            spec = replace(spec, n_trials=_n_trials(n_trials))
        if storage is not None:
            spec = replace(spec, storage=replace(spec.storage, url=storage))
        return spec


def build_pruner(pruning: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner of a ``pruning:`` section: ``pruner`` names it, the other keys (but
    ``monitor``) are its arguments, e.g. ``{pruner: median, n_warmup_steps: 100}``."""
    options = {k: v for k, v in pruning.items() if k not in ("pruner", "monitor")}
    try:
        return PRUNERS[pruning.get("pruner", "none")](**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruning: {err}") from None


def _section(raw: dict, key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping of settings, got {value!r}")
    return dict(value)


def _sampler(raw: Any) -> dict[str, Any]:
    sampler = {"name": raw} if isinstance(raw, str) else dict(raw or {"name": "tpe"})
    if sampler.get("name") not in SAMPLERS:
        raise ConfigError(
            f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler.get('name')!r}"
        )
    return sampler


def _n_trials(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"n_trials must be a positive integer, got {value!r}")
    return value


def _storage(raw: dict[str, Any]) -> StorageSettings:
    unknown = set(raw) - set(StorageSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(
            f"storage: unknown field(s) {sorted(unknown)}; known: "
            f"{', '.join(StorageSettings.__dataclass_fields__)}"
        )
    settings = StorageSettings(**raw)
    if settings.heartbeat_interval < 1:
        raise ConfigError("storage.heartbeat_interval must be at least 1 second")
    grace = settings.grace_period
    if grace is not None and grace <= settings.heartbeat_interval:
        raise ConfigError(
            f"storage.grace_period ({grace} s) must exceed heartbeat_interval "
            f"({settings.heartbeat_interval} s), or live trials are failed as dead"
        )
    return settings


def _check_inference_space(space: tuple[Param, ...]) -> None:
    from dcgd.components.schedulers import SAMPLERS as SCHEDULERS
    from dcgd.method.guidance import PROMPT_MODES

    allowed = {"prompt_mode": PROMPT_MODES, "sampler": tuple(SCHEDULERS), "use_ema": (True, False)}
    for param in space:
        if param.name not in INFERENCE_KEYS:
            raise ConfigError(
                f"unknown key search_space.{param.name} for an inference sweep; it can vary "
                f"{', '.join(INFERENCE_KEYS)} (model and data keys need kind: training)"
            )
        if param.name in allowed:
            if param.choices is None:
                raise ConfigError(f"search_space.{param.name} must be choices: [...]")
            bad = [c for c in param.choices if c not in allowed[param.name]]
            if bad:
                raise ConfigError(
                    f"search_space.{param.name}: {bad} not among "
                    f"{', '.join(map(str, allowed[param.name]))}"
                )
        elif param.name in ("steps", "seed"):
            values = param.choices if param.choices is not None else ()
            if (param.choices is None and not param.integer) or any(
                isinstance(v, bool) or not isinstance(v, int) for v in values
            ):
                raise ConfigError(f"search_space.{param.name} must be integers (type: int)")


def parse_spec(raw: Any, path: Path | None = None) -> SweepSpec:
    if not isinstance(raw, dict):
        raise ConfigError("a sweep spec is a YAML mapping (study, kind, search_space, ...)")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(
            f"unknown spec key(s) {sorted(unknown)}; known: {', '.join(sorted(TOP_KEYS))}"
        )
    kind = raw.get("kind", "inference")
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    space = parse_space(raw.get("search_space"))
    if kind == "inference":
        _check_inference_space(space)
    sampler = _sampler(raw.get("sampler"))
    objective = parse_objective(raw.get("objective"))
    pruning = _section(raw, "pruning")
    pruner = pruning.get("pruner", "none")
    if pruner not in PRUNERS:
        raise ConfigError(f"pruning.pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    if pruner != "none" and kind != "training":
        raise ConfigError(
            "pruning stops a training run from its validation metric; it applies to "
            "kind: training only (remove the pruning section)"
        )
    if pruner != "none" and not pruning.get("monitor"):
        raise ConfigError("pruning.monitor must name the logged validation metric, e.g. val/loss")
    study = str(raw.get("study") or (path.stem if path else "")).strip()
    if not study:
        raise ConfigError("study: give the sweep a name (the Optuna study and MLflow parent run)")
    tracking = _section(raw, "tracking")
    if set(tracking) - {"experiment", "tracking_uri"}:
        raise ConfigError("tracking takes experiment and tracking_uri")
    spec = SweepSpec(
        study=study,
        kind=kind,
        n_trials=1,
        sampler=sampler,
        space=space,
        objective=objective,
        pruning=pruning,
        storage=_storage(_section(raw, "storage")),
        experiment=str(tracking.get("experiment") or study),
        tracking_uri=tracking.get("tracking_uri"),
        inference=_section(raw, "inference"),
        training=_section(raw, "training"),
        function=_section(raw, "function"),
        path=path,
    )
    if sampler["name"] == "grid":
        spec.grid()  # every param must be discrete
    n_trials = raw.get("n_trials")
    if n_trials is None:
        if sampler["name"] != "grid":
            raise ConfigError("n_trials is missing (the grid sampler alone defaults to its size)")
        n_trials = spec.grid_size()
    spec = replace(spec, n_trials=_n_trials(n_trials))
    spec.build_sampler()
    spec.build_pruner()
    if kind == "training" and not spec.training.get("config"):
        raise ConfigError("a training sweep needs training.config: [the fit config file(s)]")
    if kind == "function" and not spec.function.get("target"):
        raise ConfigError("a function sweep needs function.target: package.module:callable")
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} does not exist; give a YAML file (see sweeps/)")
    return parse_spec(read_yaml(path, "sweep spec"), path)
