"""Where MLflow runs are stored: the default URI, and a reachability check.

Kept free of Lightning so that sweep workers and ``compare`` import it in milliseconds.

- The local default is ``sqlite:///mlflow.db`` with artifacts in ``./mlartifacts`` (what
  ``mlflow ui`` / ``mlflow server`` use by default); MLflow 3 refuses ``./mlruns``.
- A relative sqlite path is made absolute against the directory the command started in:
  MLflow caches its store per URI string, so a relative URI used from two directories in
  one process would silently write to the first one's database.
- ``MLFLOW_TRACKING_URI`` (or an explicit ``tracking_uri``) points at a server for clusters;
  an unreachable server is reported before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from dcgd.errors import TrackingError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def absolute_sqlite(url: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////cwd/rel.db``; every other URL unchanged."""
    if not url.startswith("sqlite:///") or url.startswith("sqlite:////"):
        return url
    path, sep, query = url[len("sqlite:///") :].partition("?")
    if not path or path == ":memory:":
        return url
    return "sqlite:///" + str(Path(path).resolve()) + sep + query


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the local sqlite store; sqlite made absolute."""
    return absolute_sqlite(uri or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI)


def is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def check_reachable(uri: str, timeout_s: int = 10) -> None:
    """Raise :class:`TrackingError` if the tracking store at ``uri`` does not answer."""
    if is_local(uri):
        return
    from mlflow.tracking import MlflowClient

    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # any failure here means "cannot track": say so before training
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({type(err).__name__}). Start it "
            f"(mlflow server --host 0.0.0.0 --port 5000), fix MLFLOW_TRACKING_URI, or track "
            f"locally with trainer.logger.init_args.tracking_uri={DEFAULT_TRACKING_URI}"
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
