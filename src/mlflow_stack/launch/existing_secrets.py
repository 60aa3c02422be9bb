"""Which of the server env's Secret references an existing Secret holds instead of ours
(kubernetes.existing_secrets): the references are pointed at it where the env is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from mlflow_stack.config.model import Settings
from mlflow_stack.launch.oidc_auth import CLIENT_SECRET_KEY, SECRET_KEY_KEY
from mlflow_stack.launch.spec import (
    DB_SECRET,
    OIDC_SECRET,
    S3_SECRET,
    SECRET_KEY_SECRET,
    EnvVar,
)

# (our Secret, our key) -> where the value lives instead, when the config names a Secret for it.
Where = Callable[[Settings], tuple[str, str] | None]


def _db(s: Settings) -> tuple[str, str] | None:
    e = s.kubernetes.existing_secrets.database
    return (e.name, e.password_key) if e and s.database.backend == "postgresql" else None


def _s3_id(s: Settings) -> tuple[str, str] | None:
    e = s.kubernetes.existing_secrets.s3
    return (e.name, e.access_key_id_key) if e and s.artifacts.backend == "s3" else None


def _s3_secret(s: Settings) -> tuple[str, str] | None:
    e = s.kubernetes.existing_secrets.s3
    return (e.name, e.secret_access_key_key) if e and s.artifacts.backend == "s3" else None


def _oidc(s: Settings) -> tuple[str, str] | None:
    e = s.kubernetes.existing_secrets.oidc_client
    return (e.name, e.client_secret_key) if e and s.sso else None


def _session(s: Settings) -> tuple[str, str] | None:
    e = s.kubernetes.existing_secrets.session_key
    return (e.name, e.key) if e and s.sso else None


MOVED: dict[tuple[str, str], Where] = {
    (DB_SECRET, "DB_PASSWORD"): _db,
    (S3_SECRET, "AWS_ACCESS_KEY_ID"): _s3_id,
    (S3_SECRET, "AWS_SECRET_ACCESS_KEY"): _s3_secret,
    (OIDC_SECRET, CLIENT_SECRET_KEY): _oidc,
    (SECRET_KEY_SECRET, SECRET_KEY_KEY): _session,
}


def moved_to(settings: Settings, secret: str, key: str) -> tuple[str, str] | None:
    where = MOVED.get((secret, key))
    return where(settings) if where else None


def retarget(settings: Settings, env: list[EnvVar]) -> list[EnvVar]:
    """The env with each secret reference that an existing Secret holds pointed at it (the
    value stays: a local server still uses it)."""
    result = []
    for var in env:
        ref = var.secret
        moved = moved_to(settings, ref.secret_name, ref.key) if ref else None
        if ref is not None and moved is not None:
            var = replace(var, secret=replace(ref, secret_name=moved[0], key=moved[1]))
        result.append(var)
    return result
