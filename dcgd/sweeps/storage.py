"""Where a study lives, and the lock that lets many workers share it safely.

- sqlite (the default, ``sqlite:///sweeps/optuna.db``) for one machine; PostgreSQL or MySQL
  (``--storage postgresql://user:pass@host/db``) for a cluster with a database server;
  ``journal:///path/optuna.log`` (Optuna's ``JournalStorage`` on a file) for machines that share
  only a file system such as NFS, where sqlite's locking is unreliable.
- Heartbeats are always on: a worker records one every ``heartbeat_interval`` seconds; a
  RUNNING trial whose heartbeat is older than ``grace_period`` belonged to a dead worker, is
  marked FAIL and re-queued as WAITING (Optuna's ``fail_stale_trials`` and
  ``RetryHeartbeatStaleTrialCallback``; RDBStorage's own heartbeats, and on a journal those of
  ``JournalHeartbeatStorage``).
- ``StudyLock`` serialises "count the trials, then ask for one" across workers, so that N
  workers never start more than ``n_trials`` trials between them. sqlite: an ``flock`` on a
  file beside the database (released by the OS when a worker dies); PostgreSQL / MySQL: a
  session-level advisory lock (released by the server when the connection drops); journal:
  Optuna's ``JournalFileOpenLock`` (an O_EXCL file, safe on NFS; a dead holder's lock is
  broken after ``JOURNAL_LOCK_GRACE_S``).
"""

from __future__ import annotations

import fcntl
import math
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import optuna
import sqlalchemy
from optuna.storages._heartbeat import BaseHeartbeat  # what fail_stale_trials looks for
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from dcgd.errors import ConfigError, TrackingError
from dcgd.sweeps.spec import StorageSettings
from dcgd.tracking.store import absolute_sqlite

if TYPE_CHECKING:
    from collections.abc import Iterator

DEFAULT_STORAGE = "sqlite:///sweeps/optuna.db"
STORAGE_ENV = "DCGD_SWEEP_STORAGE"  # the storage URL, kept off command lines (passwords)
SQLITE_TIMEOUT_S = 60  # sqlite waits this long for another worker's write instead of failing
BACKENDS = ("sqlite", "postgresql", "mysql", "journal")
JOURNAL = "journal:///"
JOURNAL_LOCK_GRACE_S = 120  # far above any hold of the study lock (joining takes seconds)
HEARTBEAT_ATTR = "dcgd:heartbeat:"  # + trial id, since a retry copies its dead trial's attrs


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


def resolve_url(url: str | None) -> str:
    """The URL every process of a sweep uses: the default when none is given, sqlite and
    journal paths made absolute (a launched fit may run elsewhere), the PostgreSQL driver named."""
    url = absolute_sqlite(url or DEFAULT_STORAGE)
    path = url[len(JOURNAL) :] if url.startswith(JOURNAL) else ""
    if path and not path.startswith("/"):
        url = JOURNAL + str(Path(path).resolve())
    return with_driver(url)


def _backend(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception:
        raise ConfigError(
            f"--storage {url!r} is not a database URL; use sqlite:///path.db, "
            "postgresql://user:password@host:5432/dbname or journal:///path/optuna.log"
        ) from None


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Heartbeats, stale-trial failing and retries are "experimental" in Optuna and warn that
    they are meant for ``Study.optimize``; the runner uses them deliberately with ask/tell."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def storage_file(url: str) -> Path:
    """The file of a sqlite or journal storage."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ConfigError(
            "an in-memory study cannot be shared or resumed; give a file, e.g. "
            f"{DEFAULT_STORAGE} or journal:///sweeps/optuna.log"
        )
    return Path(database)


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with the heartbeats it lacks (only RDBStorage has them), so that
    Optuna's ``fail_stale_trials`` and retry callback reclaim a killed worker's trial here too.

    A heartbeat is a trial system attribute holding the worker's clock (RDBStorage uses the
    database's clock), so the machines' clocks must agree to well within ``grace_period``.
    The arguments are RDBStorage's; without ``heartbeat_interval`` there are no heartbeats.
    """

    def __init__(
        self,
        log_storage: JournalFileBackend,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        super().__init__(log_storage)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or 2 * (heartbeat_interval or 0)
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, f"{HEARTBEAT_ATTR}{trial_id}", time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        oldest = time.time() - self.grace_period
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        # As in RDBStorage, a trial without a heartbeat of its own is never stale.
        beats = {t._trial_id: t.system_attrs.get(f"{HEARTBEAT_ATTR}{t._trial_id}") for t in running}
        return [i for i, beat in beats.items() if (beat or math.inf) < oldest]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.heartbeat_stale_trial_callback


SweepStorage = optuna.storages.RDBStorage | JournalHeartbeatStorage


def open_storage(url: str, settings: StorageSettings | None = None) -> SweepStorage:
    """The storage at ``url``, uncached (it reads what other processes wrote). With ``settings``:
    heartbeats, and retries of dead workers' trials. Unreachable storage -> TrackingError."""
    backend = _backend(url)
    if backend not in BACKENDS:
        raise ConfigError(
            f"storage backend {backend!r} is not supported; use sqlite, postgresql or journal"
        )
    heartbeats = {}
    if settings is not None:
        with quiet_optuna():
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)
        heartbeats = {
            "heartbeat_interval": settings.heartbeat_interval,
            "grace_period": settings.grace_period,
            "heartbeat_stale_trial_callback": retry,
        }
    if backend in ("sqlite", "journal"):
        storage_file(url).parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs = {"pool_pre_ping": True}
    if backend == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    try:
        if backend == "journal":
            journal = JournalFileBackend(str(storage_file(url)))
            return JournalHeartbeatStorage(journal, **heartbeats)
        with quiet_optuna():
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeats)
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
    """A lock shared by every worker of one study, whatever machine it runs on.

    Optuna has none for a whole "count, then ask" step (its storages lock single writes only),
    so sqlite and the databases use their own; a journal uses Optuna's lock for journal files.
    """

    def __init__(self, url: str, study: str) -> None:
        self.url = url
        self.backend = _backend(url)
        self.key = zlib.crc32(f"dcgd-sweep:{study}".encode())  # a stable 32-bit lock id
        self.name = f"dcgd-sweep-{self.key}"
        self._local = threading.local()
        self._engine: sqlalchemy.Engine | None = None
        self._journal_lock: JournalFileOpenLock | None = None
        if self.backend == "journal":
            # <journal>.sweep.lock: the journal's own write lock is <journal>.lock.
            path = f"{storage_file(url)}.sweep"
            self._journal_lock = JournalFileOpenLock(path, grace_period=JOURNAL_LOCK_GRACE_S)

    def __enter__(self) -> StudyLock:
        if self.backend in ("sqlite", "journal"):
            storage_file(self.url).parent.mkdir(parents=True, exist_ok=True)
        if self._journal_lock is not None:
            self._journal_lock.acquire()
            return self
        if self.backend == "sqlite":
            path = storage_file(self.url)
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
        if self._journal_lock is not None:
            self._journal_lock.release()
            return
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
    """Records a trial's heartbeat every interval from a thread, while the trial runs.

    Optuna's own heartbeat thread is private to ``Study.optimize`` (which the runner cannot use:
    it asks outside the study lock) and stops at its first failed write, after which peers
    would fail the live trial as dead; this one outlives a transient database error.
    """

    def __init__(self, storage: SweepStorage, trial_id: int, interval: float) -> None:
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
