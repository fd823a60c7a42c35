"""Fixtures of the sweep tests: a tiny trained checkpoint, a real PostgreSQL server, workers."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The quick-start config trained for 2 steps at 32 px: a real DCGDModule checkpoint whose
    run directory holds the config.yaml that fit saved (4 val images in batches of 2, 2
    sampling steps)."""
    from dcgd.cli import main

    workdir = tmp_path_factory.mktemp("tiny-ckpt")
    args = [
        "fit", "--config", str(QUICKSTART),
        "--trainer.max_steps", "2",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.limit_val_batches", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(workdir / "run"),
        "--data.init_args.size", "32",
        "--data.init_args.val_per_bucket", "1",
        "--data.init_args.batch_size", "2",
        "--model.init_args.val_steps", "2",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(args) == 0
    checkpoint = workdir / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    return checkpoint


# ----------------------------------------------------------------------------- PostgreSQL
def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth), with an empty database."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl); .ci/run installs it")
    try:
        import psycopg2
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install -e '.[dev]')")
    run_as: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="dcgd-pg-"))  # not under pytest's root-only tmp dir
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run the server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    pg_ctl = str(bindir / "pg_ctl")
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "dcgd", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        connection = psycopg2.connect(host="127.0.0.1", port=port, user="dcgd", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE sweeps")
        connection.close()
        yield f"postgresql://dcgd@127.0.0.1:{port}/sweeps"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- helpers
def write_spec(path: Path, **overrides) -> Path:
    """A function sweep over the toy objective (a grid of 6 values of x) with ``overrides``."""
    spec = {
        "study": study_name(path.parent),
        "kind": "function",
        "sampler": "grid",
        "n_trials": 6,
        "search_space": {"x": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]},
        "objective": {"metric": "loss", "direction": "minimize"},
        "function": {
            "target": "tests.sweeps.toy:objective",
            "args": {"markers": str(path.parent / "markers")},
        },
        "tracking": {"experiment": "toy"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path.write_text(yaml.safe_dump(spec))
    return path


def study_name(workdir: Path) -> str:
    """A study name of its own per test: the PostgreSQL database is shared by the session."""
    return f"toy-{workdir.name}"


def start_worker(spec: Path, cwd: Path, storage: str | None = None, **env) -> subprocess.Popen:
    """``python -m dcgd sweep`` in its own process; output goes to ``worker-<pid>.log``."""
    environ = {**os.environ, **env}
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO), environ.get("PYTHONPATH", "")])
    environ.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "dcgd", "sweep", "--config", str(spec)]
    if storage:
        command += ["--storage", storage]
    log_path = cwd / f"worker-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            command, cwd=cwd, env=environ, stdout=log, stderr=subprocess.STDOUT
        )
    worker.log_path = log_path
    return worker


def finish(worker: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    """Wait for a worker: (exit code, its output)."""
    code = worker.wait(timeout=timeout)
    return code, worker.log_path.read_text()


def markers(folder: Path, kind: str) -> list[tuple[int, int]]:
    """(trial number, pid) of every ``kind`` (start / done) marker the toy objective left."""
    out = []
    for path in (folder / "markers").glob(f"{kind}-*"):
        _, number, pid = path.name.split("-")
        out.append((int(number), int(pid)))
    return sorted(out)
