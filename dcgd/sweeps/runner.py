"""The worker loop: join the study, take trials until the study has enough, leave.

Any number of workers (processes, machines, SLURM array tasks) run this same loop on one
study. Under the study lock a worker fails the trials of dead workers (stale heartbeats,
re-queued as WAITING), counts the trials that hold or used up budget, and asks for a trial
only while that count is below ``n_trials``: so N workers start exactly ``n_trials`` trials
between them, a re-run of a finished sweep starts none, and a larger ``n_trials`` adds only
the difference. A worker leaves when nothing is left to run; by default it first waits for
its peers' running trials, since a peer may die and leave a trial to retry.

Budget: COMPLETE, PRUNED, RUNNING, WAITING and trials that FAILED on a user error (a
configuration the model refuses: it has been tried). A trial that crashed or whose worker
died is re-queued (up to ``storage.max_retry`` times) and is counted through its retry.

Optuna does the work where it has the part: ask/tell, the storages, heartbeats with
``fail_stale_trials`` and ``RetryHeartbeatStaleTrialCallback``, ``GridSampler``, the pruners.
The loop is ours, not ``Study.optimize`` with ``MaxTrialsCallback``: that callback counts after
a trial and only stops its own process, so N workers overshoot ``n_trials`` by up to N - 1 and
a re-run of a finished sweep still starts a trial; Optuna has no lock to count-then-ask under,
and retries only trials with stale heartbeats, not one whose objective crashed.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from dcgd.errors import ConfigError, DCGDError
from dcgd.sweeps.spec import SweepSpec
from dcgd.sweeps.storage import (
    Heartbeat,
    StudyLock,
    SweepStorage,
    display_url,
    open_storage,
    quiet_optuna,
    resolve_url,
    unreachable,
)
from dcgd.tracking.store import check_reachable
from dcgd.tracking.sweeps import StudyTracker, metric_items

USER_ERROR_ATTR = "dcgd_user_error"
WAIT_POLL_S = 10  # how often a worker with nothing to run looks at its peers' trials
SPEC_ATTR = "dcgd_spec"


@dataclass
class TrialContext:
    """What a trial may need besides its parameters."""

    number: int
    trial_id: int
    run_id: str
    study_name: str
    storage_url: str
    trial: optuna.trial.Trial
    tracking_uri: str
    experiment: str
    storage: SweepStorage  # uncached: reads what other processes wrote


@dataclass
class TrialResult:
    metrics: dict[str, dict[str, float]]  # {metric: {bucket: mean, "all": mean}}
    image: Any = None  # a PIL image logged to the trial's run
    params: dict[str, Any] = field(default_factory=dict)  # extra settings to log


class TrialKind(Protocol):
    def prepare(self) -> None:
        """Load and validate everything once per worker; raise ConfigError before any trial."""

    def fixed_params(self) -> dict[str, Any]:
        """Settings shared by every trial, logged with each trial's parameters."""

    def run(self, params: dict[str, Any], context: TrialContext) -> TrialResult: ...


@dataclass
class SweepReport:
    study: str
    storage: str
    ran: list[int]  # trial numbers this worker ran
    states: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    experiment: str
    parent_run_id: str | None


def _log(message: str) -> None:
    print(message, file=sys.stdout, flush=True)


def spec_fingerprint(spec: SweepSpec) -> dict[str, Any]:
    """What must not change between runs of one study (n_trials and the sampler may)."""
    return {
        "kind": spec.kind,
        "search_space": [p.describe() for p in spec.space],
        "objective": spec.objective.describe(),
    }


def _check_compatible(study: optuna.Study, spec: SweepSpec) -> None:
    saved = study.user_attrs.get(SPEC_ATTR)
    mine = spec_fingerprint(spec)
    if saved is None:
        study.set_user_attr(SPEC_ATTR, mine)
        return
    changed = [k for k in mine if saved.get(k) != mine[k]]
    if changed:
        raise ConfigError(
            f"study {spec.study!r} already exists with another {' and '.join(changed)} "
            f"({saved[changed[0]]} vs {mine[changed[0]]}); give this sweep a new study name "
            "(study: ... in the spec) to keep the two apart"
        )


def _counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    # Unlike MaxTrialsCallback's count by state, a FAIL counts only for a refused configuration:
    # a crashed trial or a dead worker's is counted through its retry (WAITING, then RUNNING).
    if trial.state == TrialState.FAIL:
        return USER_ERROR_ATTR in trial.user_attrs
    return True  # COMPLETE, PRUNED, RUNNING, WAITING


def next_action(study: optuna.Study, spec: SweepSpec) -> str:
    """``run`` (a WAITING trial or budget left), ``wait`` (peers still running) or ``done``."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    if states[TrialState.WAITING]:
        return "run"
    used = sum(_counts_toward_budget(t) for t in trials)
    budget = spec.n_trials
    left = True
    if spec.sampler["name"] == "grid":
        # GridSampler.is_exhausted waits for every point to finish: while peers run the last
        # points a worker would ask again and GridSampler would run one of them a second time.
        budget = min(budget, spec.grid_size())
        started = {
            t.system_attrs.get("grid_id") for t in trials if t.state != TrialState.WAITING
        } - {None}
        left = len(started) < spec.grid_size()
    if used < budget and left:
        return "run"
    if states[TrialState.RUNNING] and spec.storage.wait_for_running:
        return "wait"
    return "done"


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _join_study(
    spec: SweepSpec, url: str, kind: TrialKind, tracker: StudyTracker
) -> tuple[SweepStorage, optuna.Study]:
    """Create or load the study and its MLflow parent run; call it holding the study lock."""
    storage = open_storage(url, spec.storage)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.study,
            sampler=spec.build_sampler(),
            pruner=spec.build_pruner(),
            direction=spec.objective.direction,
            load_if_exists=True,
        )
    except Exception as err:
        raise unreachable(url, err) from None
    if study.direction.name.lower() != spec.objective.direction:
        raise ConfigError(
            f"study {spec.study!r} exists with direction {study.direction.name.lower()} but the "
            f"spec says {spec.objective.direction}; give this sweep a new study name"
        )
    _check_compatible(study, spec)
    tracker.setup(
        study,
        tags={
            "dcgd.sweep_kind": spec.kind,
            "dcgd.objective": spec.objective.describe(),
            "dcgd.direction": spec.objective.direction,
            "optuna.storage": display_url(url),
            "dcgd.n_trials": str(spec.n_trials),
            "dcgd.params": ",".join(spec.param_names),
        },
        params={
            "sampler": spec.sampler["name"],
            "search_space": "; ".join(p.describe() for p in spec.space),
            **kind.fixed_params(),
        },
    )
    return storage, study


def run_sweep(spec: SweepSpec, kind: TrialKind) -> SweepReport:
    """Join the study of ``spec`` and run trials until it has ``n_trials`` (see module doc)."""
    url = resolve_url(spec.storage.url)
    kind.prepare()  # a bad spec or checkpoint fails here, before the study is touched
    lock = StudyLock(url, spec.study)
    tracker = StudyTracker(spec.experiment, spec.tracking_uri, spec.study)
    check_reachable(tracker.uri)  # an MLflow server that is down fails before the study exists
    with lock:
        storage, study = _join_study(spec, url, kind, tracker)
    _log(
        f"dcgd sweep: study {spec.study!r} in {display_url(url)}, {spec.n_trials} trials, "
        f"objective {spec.objective.describe()}; MLflow experiment {spec.experiment!r} "
        f"(parent run {tracker.parent_run_id})"
    )

    ran: list[int] = []
    while True:
        with lock, quiet_optuna():
            optuna.storages.fail_stale_trials(study)
            action = next_action(study, spec)
            if action == "run":
                trial = study.ask()
                storage.record_heartbeat(trial._trial_id)
        if action == "done":
            break
        if action == "wait":  # a peer's trial may still die and need this worker
            time.sleep(min(spec.storage.heartbeat_interval, WAIT_POLL_S))
            continue
        _run_trial(study, storage, trial, spec, kind, tracker, url)
        ran.append(trial.number)

    with lock:
        if next_action(study, spec) == "done" and not _busy(study):
            tracker.finish(study)  # the last worker out closes the parent run
    return _report(study, spec, url, ran, tracker)


def _busy(study: optuna.Study) -> bool:
    states = (TrialState.RUNNING, TrialState.WAITING)
    return bool(study.get_trials(deepcopy=False, states=states))


def _run_trial(
    study: optuna.Study,
    storage: SweepStorage,
    trial: optuna.trial.Trial,
    spec: SweepSpec,
    kind: TrialKind,
    tracker: StudyTracker,
    url: str,
) -> None:
    """Run one trial with heartbeats (from the moment it was asked) and record its end."""
    with Heartbeat(storage, trial._trial_id, spec.storage.heartbeat_interval):
        params = {p.name: p.suggest(trial) for p in spec.space}
        retry_of = storage.get_trial(trial._trial_id).system_attrs.get("retry_history", [])
        run_id = tracker.start_trial(trial, {**params, **kind.fixed_params()}, retry_of)
        context = TrialContext(
            trial.number,
            trial._trial_id,
            run_id,
            spec.study,
            url,
            trial,
            tracker.uri,
            tracker.experiment,
            storage,
        )
        again = f" (retry of trial {retry_of[-1]})" if retry_of else ""
        _log(f"trial {trial.number}: {_describe(params)}{again}")
        try:
            result = kind.run(params, context)
            value = spec.objective.value(result.metrics)
        except optuna.TrialPruned as pruned:
            _tell(study, trial, state=TrialState.PRUNED)
            tracker.end_trial(run_id, "PRUNED")
            _log(f"trial {trial.number}: pruned ({pruned})")
            return
        except DCGDError as err:
            # The model or data refused this configuration: the trial is spent, the sweep goes on.
            trial.set_user_attr(USER_ERROR_ATTR, str(err))
            _tell(study, trial, state=TrialState.FAIL)
            tracker.end_trial(run_id, "FAIL", error=str(err))
            _log(f"trial {trial.number}: failed: {err}")
            return
        except BaseException as err:
            # A crash (a bug, out of memory, Ctrl-C): re-queue the trial with the storage's retry
            # callback (Optuna runs it for stale trials only), then stop this worker.
            # (If a peer already failed it for a late heartbeat, the peer re-queued it.)
            retry = storage.get_heartbeat_stale_trial_callback()
            if _tell(study, trial, state=TrialState.FAIL) and retry is not None:
                with quiet_optuna():
                    retry(study, storage.get_trial(trial._trial_id))
            tracker.end_trial(run_id, "FAIL", error=f"{type(err).__name__}: {err}")
            raise
    if not _tell(study, trial, values=value):
        tracker.end_trial(run_id, "FAIL", error="heartbeat lost: a peer re-queued this trial")
        return
    # Effective settings that were not swept (e.g. the model's prompt_mode), for comparisons.
    extra = {k: v for k, v in result.params.items() if k not in params}
    tracker.end_trial(run_id, "COMPLETE", result.metrics, value, result.image, extra)
    shown = {k: v for k, v in metric_items(result.metrics).items() if k.endswith("/all")}
    _log(f"trial {trial.number}: objective {value:.6g}  ({_describe(shown)})")


def _tell(study: optuna.Study, trial: optuna.trial.Trial, **kwargs: Any) -> bool:
    """Record a trial's end; False if a peer had already failed it as dead."""
    try:
        study.tell(trial, **kwargs)
        return True
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
        if isinstance(err, ValueError) and not str(err).startswith("Cannot tell a"):
            raise
        # Another worker took this trial for dead (no heartbeat for grace_period) and re-queued
        # it; the retry runs elsewhere, this result is dropped so nothing is counted twice.
        _log(
            f"warning: trial {trial.number} was failed by another worker (its heartbeat was "
            "late); its retry counts instead. Raise storage.grace_period if this recurs."
        )
        return False


def _report(
    study: optuna.Study, spec: SweepSpec, url: str, ran: list[int], tracker: StudyTracker
) -> SweepReport:
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        pick = min if spec.objective.direction == "minimize" else max
        best = pick(complete, key=lambda t: t.value)
    return SweepReport(
        study=spec.study,
        storage=display_url(url),
        ran=ran,
        states=dict(states),
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else None,
        experiment=spec.experiment,
        parent_run_id=tracker.parent_run_id,
    )
