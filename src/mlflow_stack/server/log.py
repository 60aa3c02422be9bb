"""The server's log for our decisions: mlflow-oidc-auth's configured logger, so they show up
beside its own (and under the auth-failure log limit of hardening.py)."""

from __future__ import annotations

import logging
import warnings

# Warnings MLflow's own code raises on every start that no operator can act on: its FastAPI app
# imports Starlette's deprecated WSGI middleware, and its CLI recommends uvicorn's own workers
# when given --gunicorn-opts, which the platform passes on purpose (server/gunicorn_conf.py).
KNOWN_WARNINGS = (
    (r"starlette\.middleware\.wsgi is deprecated", UserWarning),  # StarletteDeprecationWarning
    (r"We recommend using uvicorn", FutureWarning),
)


def server_log() -> logging.Logger:
    from mlflow_oidc_auth.logger import get_logger

    log: logging.Logger = get_logger()
    return log


def quiet_known_warnings() -> None:
    """Leave KNOWN_WARNINGS out of the server's log (every other warning still shows)."""
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
