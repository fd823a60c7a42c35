"""Kill a real ``python -m dcgd fit`` and resume it.

A tiny fit with timed saves every ~1 s and no validation (so that the timed save is the only
one before the kill): SIGKILL leaves the last timed ``last.ckpt`` and a RUNNING MLflow run;
SIGTERM and Ctrl-C save ``last.ckpt`` at that step, mark the run KILLED, print one line with
the resume command and exit 143 / 130; ``--ckpt_path last`` continues from the checkpoint's
step into the same MLflow run, RUNNING again, then FINISHED.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import mlflow
import pytest

from dcgd.checkpoints import load_checkpoint
from dcgd.cli import main

pytestmark = pytest.mark.slow  # a fit starts in a new interpreter (~20 s on 2 busy cores)

QUICKSTART = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")
LAST = Path("runs/p/checkpoints/last.ckpt")


def _args(max_steps: int) -> list[str]:
    return [
        "fit", "--config", QUICKSTART,
        "--trainer.default_root_dir", "runs/p",
        "--trainer.max_steps", str(max_steps),
        "--trainer.limit_val_batches", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--model.init_args.unet_config", '{"block_out_channels": [8, 16]}',
        "--model.init_args.text_encoder_config", '{"hidden_size": 16}',
        "--data.init_args.size", "32",
        "--data.init_args.batch_size", "2",
        "--data.init_args.train_length", "4000",  # no epoch ends while the test runs
        "--preemption.save_every_minutes", "0.02",  # 1.2 s
    ]  # fmt: skip


def _start(workdir: Path) -> subprocess.Popen:
    """``python -m dcgd fit`` in ``workdir``, training far longer than the test waits."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(workdir / "stdout.txt", "w") as out, open(workdir / "stderr.txt", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "dcgd", *_args(max_steps=100_000)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=err,
        )


def _wait_for_timed_save(fit: subprocess.Popen, workdir: Path, timeout: float = 240) -> int:
    """The global step of the first timed ``last.ckpt`` (written whole, by a rename)."""
    deadline = time.monotonic() + timeout
    while not (workdir / LAST).is_file():
        if fit.poll() is not None:
            pytest.fail(f"fit ended ({fit.returncode}) before saving:\n{_stderr(workdir)}")
        if time.monotonic() > deadline:
            fit.kill()
            pytest.fail(f"no last.ckpt after {timeout} s:\n{_stderr(workdir)}")
        time.sleep(0.1)
    step = load_checkpoint(workdir / LAST)["global_step"]
    assert step >= 1
    return step


def _stderr(workdir: Path) -> str:
    return (workdir / "stderr.txt").read_text()


def _client() -> mlflow.MlflowClient:
    # The quick start's store, in the test's directory. Absolute: MLflow caches a store by
    # its URI, and a relative one would still name the previous test's database.
    return mlflow.MlflowClient(f"sqlite:///{Path('mlflow.db').resolve()}")


def _status(run_id: str) -> str:
    return _client().get_run(run_id).info.status


class RecordStart(L.Callback):
    """Writes the step a fit starts from and its MLflow run's status at that moment."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        logger = trainer.logger
        status = logger.experiment.get_run(logger.run_id).info.status
        Path(self.path).write_text(json.dumps([trainer.global_step, logger.run_id, status]))


def _resume(workdir: Path, steps: int) -> tuple[int, str, str]:
    """``fit --ckpt_path last`` for ``steps`` more steps (in this process): the step it
    started from, its MLflow run and that run's status then."""
    callbacks = [{"class_path": f"{__name__}.RecordStart", "init_args": {"path": "start.json"}}]
    start = load_checkpoint(workdir / LAST)["global_step"]
    argv = [*_args(max_steps=start + steps), "--ckpt_path", "last"]
    assert main([*argv, "--trainer.callbacks", json.dumps(callbacks)]) == 0
    step, run_id, status = json.loads((workdir / "start.json").read_text())
    return step, run_id, status


def _stopped(fit: subprocess.Popen, workdir: Path, signum: int) -> tuple[int, str]:
    """Signal the fit; the step its one 'stopped' line names, and that line."""
    sent = time.time()
    fit.send_signal(signum)
    fit.wait(timeout=120)
    assert fit.returncode == 128 + signum, _stderr(workdir)
    lines = [line for line in _stderr(workdir).splitlines() if line.startswith("dcgd: stopped")]
    assert len(lines) == 1, _stderr(workdir)
    line = lines[0]
    # Saved at the signal, not only by the last timed save; whole (no temporary file left).
    assert os.path.getmtime(workdir / LAST) >= sent - 0.05
    assert sorted(p.name for p in (workdir / LAST).parent.iterdir()) == ["last.ckpt"]
    assert f"saved {(workdir / LAST).resolve()}" in line
    assert line.endswith("--ckpt_path last")
    return int(re.search(r"at step (\d+)", line)[1]), line


def test_sigkill_leaves_the_timed_checkpoint_and_resume_continues_the_run(workdir):
    fit = _start(workdir)
    timed = _wait_for_timed_save(fit, workdir)
    fit.kill()
    assert fit.wait(timeout=60) == -signal.SIGKILL

    checkpoint = load_checkpoint(workdir / LAST)  # whole, readable by the safe reader
    step, run_id = checkpoint["global_step"], checkpoint["mlflow_run_id"]
    assert step >= timed
    assert _status(run_id) == "RUNNING"  # nothing could mark it

    started, resumed_run, status = _resume(workdir, steps=2)
    assert started == step  # from the checkpoint's step, not from 0
    assert (resumed_run, status) == (run_id, "RUNNING")
    assert load_checkpoint(workdir / LAST)["global_step"] == step + 2
    assert _status(run_id) == "FINISHED"


def test_sigterm_saves_marks_the_run_killed_and_resume_finishes_it(workdir):
    fit = _start(workdir)
    timed = _wait_for_timed_save(fit, workdir)
    stopped_at, _ = _stopped(fit, workdir, signal.SIGTERM)

    checkpoint = load_checkpoint(workdir / LAST)
    assert checkpoint["global_step"] == stopped_at >= timed
    run_id = checkpoint["mlflow_run_id"]
    assert _status(run_id) == "KILLED"

    started, resumed_run, status = _resume(workdir, steps=2)
    assert (started, resumed_run, status) == (stopped_at, run_id, "RUNNING")
    assert load_checkpoint(workdir / LAST)["global_step"] == stopped_at + 2
    assert _status(run_id) == "FINISHED"
    client = _client()
    experiment = client.get_experiment_by_name("dcgd-quickstart").experiment_id
    assert [run.info.run_id for run in client.search_runs([experiment])] == [run_id]


def test_ctrl_c_saves_and_marks_the_run_killed(workdir):
    fit = _start(workdir)
    timed = _wait_for_timed_save(fit, workdir)
    stopped_at, line = _stopped(fit, workdir, signal.SIGINT)
    assert "Ctrl-C" in line

    checkpoint = load_checkpoint(workdir / LAST)
    assert checkpoint["global_step"] == stopped_at >= timed
    assert _status(checkpoint["mlflow_run_id"]) == "KILLED"
