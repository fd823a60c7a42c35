"""A cheap objective for exercising the real sweep runner, storage and MLflow tracking.

Every call leaves marker files, so tests can count how often each trial really ran and in
which process: ``start-<trial>-<pid>`` when it begins, ``done-<trial>-<pid>`` when it ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna

_first_call = True


def _pids(markers: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[1] for p in markers.glob("start-*")}


def objective(params, context, markers: str, barrier: int = 0, wait_s: float = 180.0):
    """``(x - 0.3)^2`` as ``loss/all`` (and per two fake buckets).

    ``barrier``: on its first trial a process waits until that many processes have started a
    trial, so a test knows its workers really ran side by side. ``TOY_HANG=1`` in the
    environment: the process's first trial never returns (a worker to kill mid-trial).
    """
    global _first_call
    first, _first_call = _first_call, False
    folder = Path(markers)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"start-{context.number}-{os.getpid()}").touch()
    if first and os.environ.get("TOY_HANG") == "1":
        while True:
            time.sleep(1)
    if first and barrier:
        deadline = time.monotonic() + wait_s
        while len(_pids(folder)) < barrier:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {_pids(folder)} started within {wait_s} s")
            time.sleep(0.05)
    if params["x"] == "refuse":  # a configuration the model rejects, with a clear message
        from dcgd.errors import ConfigError

        raise ConfigError("the toy refuses x = 'refuse'")
    if params["x"] == "crash":  # a bug
        raise ValueError("toy crash")
    if params["x"] == "late" and not (folder / "late").exists():
        # What a peer does when this worker's heartbeat is late: fail the running trial and
        # queue a retry (fail_stale_trials + the retry callback), while it is still running.
        (folder / "late").touch()
        storage = optuna.storages.RDBStorage(context.storage_url)
        storage.set_trial_state_values(context.trial_id, optuna.trial.TrialState.FAIL)
        frozen = storage.get_trial(context.trial_id)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(context.trial.study, frozen)
    x = 0.0 if params["x"] == "late" else float(params["x"])
    loss = (x - 0.3) ** 2
    (folder / f"done-{context.number}-{os.getpid()}").touch()
    return {"loss": {"0.01-0.1": loss / 2, "0.1-0.2": loss * 2, "all": loss}, "x2": {"all": x * x}}


MODE_GAIN = {"none": 0.0, "positive": 0.5, "negative": 1.0, "dual": 2.0}


def ablation(params, context):
    """Table-1-shaped metrics that depend on prompt_mode and w in a known way: ``dual`` at
    ``w = 2`` is the best trial, and larger holes score worse."""
    gain = MODE_GAIN[params["prompt_mode"]] - abs(float(params["w"]) - 2.0)
    buckets = {"0.01-0.1": 0.0, "0.1-0.2": 1.0, "0.2-0.3": 2.0, "0.3-0.4": 3.0}
    psnr = {b: 30.0 - 2 * k + gain for b, k in buckets.items()}
    mae = {b: 0.01 * (1 + k) - 0.001 * gain for b, k in buckets.items()}
    psnr["all"] = sum(psnr.values()) / 4
    mae["all"] = sum(mae.values()) / 4
    from PIL import Image

    from dcgd.sweeps.runner import TrialResult

    shade = int(40 * MODE_GAIN[params["prompt_mode"]])  # an "image grid" to log
    return TrialResult({"psnr": psnr, "mae": mae}, Image.new("RGB", (24, 8), (shade, 0, 0)))
