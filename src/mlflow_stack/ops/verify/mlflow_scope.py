"""MLflow's process-wide settings (tracking URI, environment, log level), scoped to one run of
`verify` and put back afterwards."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator

# MLflow settings a run controls for its duration (restored afterwards).
_MLFLOW_ENV = {
    "MLFLOW_TRACKING_TOKEN": None,  # set per step from the identity
    "MLFLOW_TRACKING_AUTH": None,  # our token, not another provider's
    "MLFLOW_TRACKING_USERNAME": None,
    "MLFLOW_TRACKING_PASSWORD": None,
    "MLFLOW_RUN_ID": None,
    "MLFLOW_EXPERIMENT_ID": None,
    "MLFLOW_EXPERIMENT_NAME": None,
    "MLFLOW_REGISTRY_URI": None,
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # A trace is sent before its step reads it back (and before the token may change).
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
    # Fail a verify in seconds, not after MLflow's default minutes of back-off.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


@contextlib.contextmanager
def mlflow_scope(url: str) -> Iterator[Callable[[str | None], None]]:
    """Point MLflow at url for the duration; yields a setter for the bearer token."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    keys = [*_MLFLOW_ENV, "MLFLOW_TRACKING_URI"]
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_uri = tracking_utils._tracking_uri
    mlflow_logger = logging.getLogger("mlflow")
    saved_level = mlflow_logger.level

    def set_token(token: str | None) -> None:
        if token:
            os.environ["MLFLOW_TRACKING_TOKEN"] = token
        else:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)

    try:
        for key, value in _MLFLOW_ENV.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(url)
        mlflow_logger.setLevel(logging.ERROR)  # "waiting for model version ..." and the like
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield set_token
    finally:
        with contextlib.suppress(Exception):
            while mlflow.active_run() is not None:
                mlflow.end_run()
        mlflow.set_tracking_uri(saved_uri)  # type: ignore[arg-type]  # None is accepted
        mlflow_logger.setLevel(saved_level)
        for key, old in saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
