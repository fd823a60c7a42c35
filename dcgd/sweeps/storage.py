"""Where a study lives, and the lock that lets many workers share it safely.

- sqlite (the default, ``sqlite:///sweeps/optuna.db``) for one machine; PostgreSQL or MySQL
  (``--storage postgresql://user:pass@host/db``) for a cluster.
- Heartbeats are always on: a worker records one every ``heartbeat_interval`` seconds; a
  RUNNING trial whose heartbeat is older than ``grace_period`` belonged to a dead worker, is
  marked FAIL and re-queued as WAITING (Optuna's ``RetryHeartbeatStaleTrialCallback``).
- ``StudyLock`` serialises "count the trials, then ask for one" across workers, so that N
  workers never start more than ``n_trials`` trials between them. sqlite: an ``flock`` on a
  file beside the database (released by the OS when a worker dies); PostgreSQL / MySQL: a
  session-level advisory lock (released by the server when the connection drops).
"""

from __future__ import annotations

import fcntl
import threading
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from dcgd.errors import ConfigError, TrackingError
from dcgd.sweeps.spec import StorageSettings

DEFAULT_STORAGE = "sqlite:///sweeps/optuna.db"
STORAGE_ENV = "DCGD_SWEEP_STORAGE"  # the storage URL, kept off command lines (passwords)
SQLITE_TIMEOUT_S = 60  # sqlite waits this long for another worker's write instead of failing


def display_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def with_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; where only psycopg2 is installed
    (``psycopg2-binary``, what dcgd's dev extra brings), name that driver explicitly."""
    try:
        parsed = make_url(url)
    except Exception:
        return url
    if parsed.drivername != "postgresql":
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def _backend(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception:
        raise ConfigError(
            f"--storage {url!r} is not a database URL; use sqlite:///path.db or "
            "postgresql://user:password@host:5432/dbname"
        ) from None


@contextmanager
def quiet_optuna():
    """Heartbeats, stale-trial failing and retries are "experimental" in Optuna and warn that
    they are meant for ``Study.optimize``; the runner uses them deliberately with ask/tell."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ConfigError(
            "an in-memory sqlite study cannot be shared or resumed; give a file, e.g. "
            f"{DEFAULT_STORAGE}"
        )
    return Path(database)


def open_storage(url: str, settings: StorageSettings) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeats and retries; unreachable databases -> TrackingError."""
    backend = _backend(url)
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise ConfigError(f"storage backend {backend!r} is not supported; use sqlite or postgresql")
    engine_kwargs = {}
    if backend == "sqlite":
        sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with quiet_optuna():
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)
    try:
        with quiet_optuna():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=settings.heartbeat_interval,
                grace_period=settings.grace_period,
                heartbeat_stale_trial_callback=retry,
            )
    except ImportError as err:
        raise TrackingError(
            f"the database driver for {backend} is missing ({err}); pip install psycopg2-binary "
            "(PostgreSQL) or PyMySQL (MySQL)"
        ) from None
    except Exception as err:
        raise unreachable(url, err) from None


def unreachable(url: str, err: BaseException) -> TrackingError:
    why = " ".join(str(getattr(err, "orig", None) or err).split())[:200]
    return TrackingError(
        f"cannot open the Optuna storage {display_url(url)} ({type(err).__name__}: {why}). "
        "Start the database or fix --storage (e.g. postgresql://user:pass@host:5432/db), or "
        f"leave --storage out for the local {DEFAULT_STORAGE}"
    )


class StudyLock:
    """A lock shared by every worker of one study, whatever machine it runs on."""

    def __init__(self, url: str, study: str) -> None:
        self.url = url
        self.backend = _backend(url)
        self.key = zlib.crc32(f"dcgd-sweep:{study}".encode())  # a stable 32-bit lock id
        self.name = f"dcgd-sweep-{self.key}"
        self._local = threading.local()
        self._engine: sqlalchemy.Engine | None = None

    def __enter__(self) -> StudyLock:
        if self.backend == "sqlite":
            path = sqlite_path(self.url)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._local.handle = handle
            return self
        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
        try:
            connection = self._engine.connect()
            if self.backend == "postgresql":
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            else:
                connection.execute(sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": self.name})
        except Exception as err:
            raise unreachable(self.url, err) from None
        self._local.connection = connection
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.backend == "sqlite":
            handle = self._local.handle
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
            return
        connection = self._local.connection
        try:
            if self.backend == "postgresql":
                connection.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key}
                )
            else:
                connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})
        finally:
            connection.close()  # closing the session releases the lock in any case


class Heartbeat:
    """Records a trial's heartbeat every interval from a thread, while the trial runs."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="optuna-heartbeat")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a transient database error must not kill the trial
                pass

    def __enter__(self) -> Heartbeat:
        self.storage.record_heartbeat(self.trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
