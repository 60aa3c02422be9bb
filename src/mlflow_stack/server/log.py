"""The server's log for our decisions: mlflow-oidc-auth's configured logger, so they show up
beside its own (and under the auth-failure log limit of hardening.py)."""

from __future__ import annotations

import logging


def server_log() -> logging.Logger:
    from mlflow_oidc_auth.logger import get_logger

    log: logging.Logger = get_logger()
    return log
