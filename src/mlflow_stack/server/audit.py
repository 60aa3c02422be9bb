"""The audit trail: who did what, when, from where — one JSON line per event, apart from the
server log (a file locally, stdout in a pod; `"log": "audit"` tells the lines apart).

Fields of every line: ``time`` (UTC, ISO 8601), ``log`` ("audit"), ``action``, ``user`` (who
acted; null when unauthenticated), ``subject`` (the user or group the action concerns, e.g.
whose permission changed), ``object`` (what it was about), ``result`` ("success" or
"denied"), ``source`` (the client address), ``detail`` (a small mapping; never a credential).

Two sources, one format:

- mlflow-oidc-auth's own audit events (sign-ins ``auth.login``, ``permission.*``,
  ``user.*``, ``group.*``, ...), taken from its ``mlflow_oidc_auth.audit`` logger and reshaped;
- this middleware's: every refused request (401/403: ``request.refused``, carrying the reason
  mlflow-oidc-auth gave when it logged one, so a refusal is one line) and every successful
  deletion of an experiment, run, registered model or prompt, model version, logged model,
  trace or dataset, and artifact (MLflow has no audit of its own).

``MLFLOW_STACK_AUDIT_LOG``: a file to append to, or ``-`` for stdout; unset: stderr (as
mlflow-oidc-auth does). ``AUDIT_LOG_ENABLED=false`` turns both sources off.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from mlflow_stack.server.asgi import ASGIApp, Message, Receive, Scope, Send, routed_path
from mlflow_stack.server.guards import Shape

AUDIT_LOG_ENV = "MLFLOW_STACK_AUDIT_LOG"
ENABLED_ENV = "AUDIT_LOG_ENABLED"
UPSTREAM_LOGGER = "mlflow_oidc_auth.audit"
AUTH_CONTEXT_KEY = "mlflow_oidc_auth"  # mlflow_oidc_auth.entities.auth_context
MAX_BODY = 64 * 2**10  # deletion requests are small JSON; more is not read for the trail
# Never written, whatever an upstream event's detail holds.
_SECRET_KEY = re.compile(r"token|secret|password|cookie|authorization", re.IGNORECASE)

# (method, routed path with /ajax-api read as /api) -> action, and where its object's id is:
# request JSON/query fields, or the path's named groups.
_DELETIONS: tuple[tuple[str, re.Pattern[str], str, tuple[str, ...]], ...] = tuple(
    (method, re.compile(path), action, fields) for method, path, action, fields in (
        ("POST", r"/api/2\.0/mlflow/experiments/delete", "experiment.delete",
         ("experiment_id",)),
        ("POST", r"/api/2\.0/mlflow/runs/delete", "run.delete", ("run_id",)),
        ("DELETE", r"/api/2\.0/mlflow/registered-models/delete", "registered_model.delete",
         ("name",)),
        ("DELETE", r"/api/2\.0/mlflow/model-versions/delete", "model_version.delete",
         ("name", "version")),
        ("DELETE", r"/api/2\.0/mlflow/logged-models/(?P<model_id>[^/]+)",
         "logged_model.delete", ("model_id",)),
        ("POST", r"/api/[23]\.0/mlflow/traces/delete-traces", "trace.delete",
         ("experiment_id", "request_ids", "trace_ids", "max_timestamp_millis")),
        ("DELETE", r"/api/3\.0/mlflow/datasets/(?P<dataset_id>[^/]+)", "dataset.delete",
         ("dataset_id",)),
        ("DELETE", r"/api/2\.0/mlflow-artifacts/artifacts/(?P<path>.+)", "artifact.delete",
         ("path",)),
    ))

# The request being served (set by the middleware): where an upstream "denied" event's reason
# goes, so that the refusal is one line, written when the response is known.
_REQUEST: ContextVar[dict[str, Any] | None] = ContextVar("mlflow_stack_audit_request",
                                                         default=None)


def enabled() -> bool:
    return os.environ.get(ENABLED_ENV, "true").strip().lower() not in {"0", "false", "no", "off"}


def _clean(detail: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if not _SECRET_KEY.search(str(k))}


def record(action: str, *, user: str | None, subject: str | None = None,
           obj: str | None = None, result: str = "success", source: str | None = None,
           detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "log": "audit",
            "action": action, "user": user, "subject": subject, "object": obj,
            "result": result, "source": source, "detail": _clean(detail or {})}


def _subject(event: Mapping[str, Any], detail: dict[str, Any]) -> str | None:
    if "group_name" in detail:
        return f"group {detail.pop('group_name')}"
    if "username" in detail:
        return f"user {detail.pop('username')}"
    kind, rid = event.get("resource_type"), event.get("resource_id")
    if kind in ("user", "group") and rid is not None:
        return f"{kind} {rid}"
    return None


def _object(event: Mapping[str, Any]) -> str | None:
    kind, rid = event.get("resource_type"), event.get("resource_id")
    if kind in (None, "user", "group"):
        return None
    # "group_experiment_permission" -> "experiment": the grant's resource.
    name = str(kind).removeprefix("group_").removeprefix("user_")
    name = name.removesuffix("_permissions").removesuffix("_permission")
    return f"{name} {rid}" if rid is not None else name


def from_upstream(event: Mapping[str, Any], source: str | None) -> dict[str, Any]:
    """mlflow-oidc-auth's event (audit.py: event, actor, resource_type, resource_id, detail,
    status) in this trail's shape."""
    detail = dict(event.get("detail") or {})
    subject = _subject(event, detail)
    out = record(str(event.get("event")), user=event.get("actor"), subject=subject,
                 obj=_object(event), result=str(event.get("status") or "success"),
                 source=source, detail=detail)
    if event.get("timestamp"):
        out["time"] = str(event["timestamp"])
    return out


class _Sink(logging.Handler):
    """Writes each event as one JSON line: ours directly (`write`), mlflow-oidc-auth's through
    its logger (`emit`)."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream

    def write(self, line: dict[str, Any]) -> None:
        self.acquire()
        try:
            self.stream.write(json.dumps(line, default=str) + "\n")
            self.stream.flush()
        finally:
            self.release()

    def emit(self, rec: logging.LogRecord) -> None:
        try:
            event = json.loads(rec.getMessage())
            request = _REQUEST.get()
            if request is not None and event.get("status") == "denied":
                # The response will be a refusal: its line carries this reason.
                request.setdefault("reasons", []).append(
                    {"event": event.get("event"), **_clean(event.get("detail") or {})})
                request["user"] = request.get("user") or event.get("actor")
                return
            line = from_upstream(event, request.get("source") if request else None)
            if line["user"] is None and request is not None:
                # Some of its routes pass a permission check's None on as the actor.
                line["user"] = _username(request["scope"])
            self.write(line)
        except Exception:
            self.handleError(rec)


UPSTREAM_LOGGER_SLOT = Shape("mlflow_oidc_auth.audit", "_get_audit_logger", ())
_sink: _Sink | None = None


def configure() -> None:
    """Send both sources to the sink `MLFLOW_STACK_AUDIT_LOG` names (once per process).

    mlflow-oidc-auth's events get a logger of their own that is not in logging's registry, so a
    later logging configuration (dictConfig with disable_existing_loggers) cannot mute them."""
    global _sink
    UPSTREAM_LOGGER_SLOT.require()
    target = os.environ.get(AUDIT_LOG_ENV, "")
    if target == "-":
        stream: Any = sys.stdout
    elif target:
        # Appended by every worker: one write per line (O_APPEND keeps lines whole).
        stream = open(target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    else:
        stream = sys.stderr
    _sink = _Sink(stream)
    upstream = logging.Logger(UPSTREAM_LOGGER, logging.DEBUG)
    upstream.addHandler(_sink)
    upstream.propagate = False
    UPSTREAM_LOGGER_SLOT.owner()._audit_logger = upstream


def emit(line: dict[str, Any]) -> None:
    if _sink is not None:
        _sink.write(line)


def _username(scope: Scope) -> str | None:
    """Who mlflow-oidc-auth authenticated for this request (set once it has)."""
    name = getattr(scope.get(AUTH_CONTEXT_KEY), "username", None)
    return str(name) if name else None


def _deletion(method: str, path: str) -> tuple[str, tuple[str, ...], dict[str, str]] | None:
    if path.startswith("/ajax-api/"):
        path = "/api/" + path[len("/ajax-api/"):]
    for m, pattern, action, fields in _DELETIONS:
        match = pattern.fullmatch(path) if m == method else None
        if match:
            return action, fields, match.groupdict()
    return None


def _object_of(action: str, fields: tuple[str, ...], from_path: dict[str, str],
               body: bytes, query: bytes) -> str:
    values: dict[str, Any] = dict(from_path)
    try:
        data = json.loads(body) if body else {}
        if isinstance(data, dict):
            values.update({k: v for k, v in data.items() if k in fields})
    except ValueError:
        pass
    for k, v in parse_qs(query.decode("latin-1")).items():
        if k in fields and k not in values:
            values[k] = v[0]
    kind = action.removesuffix(".delete")
    ids = ", ".join(f"{k}={values[k]}" for k in fields if k in values)
    return f"{kind} {ids}" if ids else kind


class AuditTrail:
    """Records refusals and deletions once the response status is known."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.on = enabled()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.on:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        request: dict[str, Any] = {"source": client[0] if client else None, "scope": scope}
        token = _REQUEST.set(request)
        method, path = scope["method"], routed_path(scope)
        deletion = _deletion(method, path)
        body = bytearray()

        async def receive_body() -> Message:
            message = await receive()
            if message.get("type") == "http.request" and len(body) < MAX_BODY:
                body.extend(message.get("body", b"")[:MAX_BODY - len(body)])
            return message

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Written before the response leaves: a client that has its answer finds the
                # line there (and one that hangs up early cannot prevent it). The request is
                # authenticated and its body read by now.
                line = self._line(request, method, path, int(message["status"]), deletion,
                                  bytes(body), scope.get("query_string", b""))
                if line is not None:
                    emit(line)
            await send(message)

        try:
            await self.app(scope, receive_body if deletion else receive, send_recorded)
        finally:
            _REQUEST.reset(token)

    @staticmethod
    def _line(request: dict[str, Any], method: str, path: str, status: int,
              deletion: tuple[str, tuple[str, ...], dict[str, str]] | None, body: bytes,
              query: bytes) -> dict[str, Any] | None:
        user = _username(request["scope"]) or request.get("user")
        # A refusal: 401/403, or a browser sent to the login page after mlflow-oidc-auth
        # refused its session (its reason was held back for this line).
        if status in (401, 403) or request.get("reasons"):
            detail: dict[str, Any] = {"status": status}
            if request.get("reasons"):
                detail["reasons"] = request["reasons"]
            return record("request.refused", user=user, obj=f"{method} {path}",
                          result="denied", source=request["source"], detail=detail)
        if deletion is not None and 200 <= status < 300:
            action, fields, from_path = deletion
            return record(action, user=user,
                          obj=_object_of(action, fields, from_path, body, query),
                          source=request["source"])
        return None
