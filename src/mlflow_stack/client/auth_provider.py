"""The `keycloak` MLflow request-auth plugin: ``MLFLOW_TRACKING_AUTH=keycloak``.

MLflow's ``http_request`` (every tracking, model-registry and proxied-artifact call, including
the calls that create, complete and abort multipart uploads and that ask for presigned URLs)
looks up the provider named by ``MLFLOW_TRACKING_AUTH`` on each request and hands its auth object
to ``requests``. The presigned S3 transfers themselves go through plain ``requests`` calls
without it, so the bearer token never travels to the object store.

The auth object sets ``Authorization: Bearer <token>`` from a process-wide ``TokenManager`` (one
per set of credential variables), which reuses the cached token and renews it shortly before it
expires. It replaces any static ``MLFLOW_TRACKING_TOKEN`` / basic-auth header MLflow added.
If the server still answers 401 (the session was revoked, Keycloak's keys rotated), the token is
renewed and the request sent once more, at most once per 30 s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Any

import requests
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from requests.auth import AuthBase

from mlflow_stack.client import oidc, tokens

log = logging.getLogger(__name__)

PROVIDER_NAME = "keycloak"
# Every variable that changes which token we get: a change makes a new manager.
_ENV_KEYS = (oidc.ENV_TOKEN_URL, oidc.ENV_CLIENT_ID, oidc.ENV_CLIENT_SECRET, oidc.ENV_USERNAME,
             oidc.ENV_PASSWORD, oidc.ENV_CA_BUNDLE, oidc.ENV_GRANT, oidc.ENV_CACHE,
             oidc.ENV_MAX_SKEW, "XDG_STATE_HOME", "HOME")
_RETRIED = "_mlflow_stack_keycloak_retried"

_managers: dict[str, tokens.TokenManager] = {}
_managers_lock = threading.Lock()


def _env_fingerprint() -> str:
    # Hashed, so the registry holds no second copy of the secrets.
    joined = "\0".join(f"{k}={os.environ.get(k, '')}" for k in _ENV_KEYS)
    return hashlib.sha256(joined.encode()).hexdigest()


def shared_manager() -> tokens.TokenManager:
    """The process's TokenManager for the current environment (created on first use)."""
    key = _env_fingerprint()
    manager = _managers.get(key)
    if manager is not None:
        return manager
    with _managers_lock:
        manager = _managers.get(key)
        if manager is None:
            manager = _managers[key] = tokens.manager_from_env()
        return manager


def reset_managers() -> None:
    """Forget every manager (tests; after changing credentials in-process)."""
    with _managers_lock:
        for manager in _managers.values():
            manager.close()
        _managers.clear()


class KeycloakAuth(AuthBase):
    """requests auth: a fresh Keycloak bearer token on each request, one retry after a 401."""

    def __init__(self, manager: tokens.TokenManager) -> None:
        self.manager = manager

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.manager.token()}"
        body = request.body
        # Remember where a streamed body (artifact upload) starts, to resend it after a 401.
        position = None
        if body is not None and hasattr(body, "tell") and hasattr(body, "seek"):
            try:
                position = body.tell()
            except OSError:
                position = None
        setattr(request, "_mlflow_stack_body_pos", position)  # noqa: B010
        request.register_hook("response", self._handle_401)
        return request

    def _handle_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        if response.status_code != 401 or getattr(request, _RETRIED, False):
            return response
        sent = str(request.headers.get("Authorization", "")).removeprefix("Bearer ")
        body = request.body
        position = getattr(request, "_mlflow_stack_body_pos", None)
        if body is not None and not isinstance(body, bytes | str) and position is None:
            return response  # a one-shot stream cannot be sent again
        if not self.manager.invalidate(sent):
            return response
        try:
            fresh = self.manager.token()
        except oidc.TokenError as exc:
            log.warning("the MLflow server refused the Keycloak token (HTTP 401) and no new "
                        "token could be had: %s", exc)
            return response
        if fresh == sent:
            return response
        log.warning("the MLflow server refused the Keycloak token (HTTP 401); retrying once "
                    "with a renewed token")
        if position is not None:
            body.seek(position)  # type: ignore[union-attr]
        response.content  # noqa: B018 - drain, so the connection can be reused
        response.close()
        retry = request.copy()
        retry.headers["Authorization"] = f"Bearer {fresh}"
        setattr(retry, _RETRIED, True)
        adapter = response.connection
        second: requests.Response = adapter.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        return second


class KeycloakRequestAuthProvider(RequestAuthProvider):
    """Entry point `keycloak` in group `mlflow.request_auth_provider`."""

    def get_name(self) -> str:
        return PROVIDER_NAME

    def get_auth(self) -> KeycloakAuth:
        # Called by MLflow for every request: cheap after the first call (a hash and a dict).
        return KeycloakAuth(shared_manager())
