"""Artifact paths checked up front, artifact errors without internals (issue 11 §3, item 4).

MLflow's path check (``validate_path_is_safe``) knows only the host's own separators: on Linux
``..\\..\\x`` passes and becomes an odd key or file name, and a path that names another store
(``s3://bucket/...``) goes on to the store. A missing file on S3 is then an HTTP 500 whose
message names the bucket and key layout ("... downloading one or more artifacts from
s3://<bucket>/artifacts: ... HeadObject ... Not Found").

``ArtifactGuard`` therefore
- answers 400 for an artifact path (in the URL of the ``mlflow-artifacts`` routes, or in the
  ``path``-style query parameter of the list/get/upload endpoints) that, decoded the way MLflow
  decodes it, has a backslash, a control character or ``#``, a ``..`` segment, is absolute, or
  names a URI scheme or drive (``s3:``, ``file:``, ``C:``);
- replaces the body of every 5xx answer on an artifact route, and of any error answer there that
  names the artifact store (its URI, bucket or directory, or the server's temp directory), with
  a message that does not (a store's "not found" becomes 404). MLflow logs the details of its
  5xx errors in the server log; other replaced messages are logged here.
"""

from __future__ import annotations

import json
import logging
import os
import re
from urllib.parse import parse_qsl, unquote, urlsplit

from mlflow_stack.server.asgi import ASGIApp, Message, Receive, Scope, Send, routed_path, send_error

logger = logging.getLogger(__name__)

_API_BASES = ("/api/2.0/", "/ajax-api/2.0/")
# Routes whose URL path ends in an artifact path.
PATH_ROUTES = tuple(f"{base}mlflow-artifacts/{route}/" for base in _API_BASES
                    for route in ("artifacts", "mpu/create", "mpu/complete", "mpu/abort",
                                  "presigned"))
# Routes with artifact paths in query parameters (MLflow 3.17.2's url map).
QUERY_ROUTES: dict[str, tuple[str, ...]] = {
    "/get-artifact": ("path",),
    "/model-versions/get-artifact": ("path",),
    **{f"{base}mlflow-artifacts/artifacts": ("path",) for base in _API_BASES},
    **{f"{base}mlflow/artifacts/list": ("path",) for base in _API_BASES},
    **{f"{base}mlflow/upload-artifact": ("path",) for base in _API_BASES},
}
LOGGED_MODEL_ROUTES = {"/artifacts/files": ("artifact_file_path",),
                       "/artifacts/directories": ("artifact_directory_path",)}
_BAD_CHARS = re.compile(r"[\\#\x00-\x1f\x7f]")
INVALID_PATH = ("Invalid artifact path: it must be relative, with '/' as separator, and have no "
                "'..' or empty segment, backslash, control character, '#' or URI scheme")
STORE_NOT_FOUND = ("(404)", "NoSuchKey", "Not Found", "does not exist")
_ERROR_BODY_CAP = 64 * 1024


def path_problem(path: str) -> bool:
    """Whether an artifact path is one to refuse (decoded as MLflow decodes it: repeatedly)."""
    text = path
    for _ in range(10):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    else:
        return True
    if _BAD_CHARS.search(text) or text.startswith("/") or "://" in text:
        return True
    segments = text.split("/")
    # An empty segment inside ('run/artifacts//tmp/x') makes the rest absolute to MLflow.
    return segments[0].endswith(":") or ".." in segments or "" in segments[:-1]


def _query_params(path: str) -> tuple[str, ...]:
    params = QUERY_ROUTES.get(path)
    if params is None and "/mlflow/logged-models/" in path:
        for suffix, names in LOGGED_MODEL_ROUTES.items():
            if path.endswith(suffix):
                return names
    return params or ()


def request_problem(scope: Scope, path: str) -> bool:
    """Whether the request names a bad artifact path (``path``: the routed path)."""
    for prefix in PATH_ROUTES:
        if path.startswith(prefix):
            rest = path[len(prefix):]
            return bool(rest) and path_problem(rest)
    names = _query_params(path)
    if names and scope.get("query_string"):
        query = scope["query_string"].decode("latin-1")
        return any(path_problem(value) for key, value in
                   parse_qsl(query, keep_blank_values=True) if key in names)
    return False


def internal_markers(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """Strings that give away where artifacts live: the store's URI, bucket and directory, and
    the server's temp directory."""
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR  # type: ignore[attr-defined]

    env = os.environ if environ is None else environ
    markers: list[str] = []
    destination = env.get(ARTIFACTS_DESTINATION_ENV_VAR, "")
    if destination:
        markers.append(destination.rstrip("/"))
        parts = urlsplit(destination)
        if parts.scheme and parts.netloc:  # s3://bucket/prefix: the bucket in any spelling
            markers += [f"{parts.scheme}://{parts.netloc}", f"/{parts.netloc}/"]
        elif len(destination) > 1:
            markers.append(os.path.abspath(destination))
    markers += [env[name] for name in ("TMPDIR", "MLFLOW_TMP_DIR") if len(env.get(name, "")) > 1]
    return tuple(dict.fromkeys(m for m in markers if m))


class ArtifactGuard:
    """Refuses bad artifact paths (400) and keeps internals out of artifact error bodies."""

    def __init__(self, app: ASGIApp, markers: tuple[str, ...] | None = None) -> None:
        self.app = app
        self.markers = internal_markers() if markers is None else markers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "artifact" not in scope["path"]:
            await self.app(scope, receive, send)
            return
        if request_problem(scope, routed_path(scope)):
            await send_error(send, 400, "INVALID_PARAMETER_VALUE", INVALID_PATH)
            return
        held: Message | None = None
        chunks: list[bytes] = []
        size = 0

        async def guarded_send(message: Message) -> None:
            nonlocal held, size
            if held is None:
                if message["type"] == "http.response.start" and message["status"] >= 400:
                    held = message  # an error answer: small; read it before it goes out
                    return
                await send(message)
                return
            body = message.get("body", b"")
            if size <= _ERROR_BODY_CAP:
                chunks.append(body)
            size += len(body)
            if not message.get("more_body", False):
                await self._error(send, held, b"".join(chunks), size > _ERROR_BODY_CAP, scope)

        await self.app(scope, receive, guarded_send)

    async def _error(self, send: Send, start: Message, body: bytes, oversized: bool,
                     scope: Scope) -> None:
        status: int = start["status"]
        text = body.decode("utf-8", "replace")
        if status < 500 and not oversized and not any(m in text for m in self.markers):
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        if status >= 500 and any(s in text for s in STORE_NOT_FOUND):
            await send_error(send, 404, "RESOURCE_DOES_NOT_EXIST", "No such artifact")
            return
        if status >= 500:
            await send_error(send, status, "INTERNAL_ERROR", "The artifact store could not "
                             "complete this request (details are in the server log)")
            return
        try:
            code = str(json.loads(text).get("error_code") or "INVALID_PARAMETER_VALUE")
        except (ValueError, AttributeError):
            code = "INVALID_PARAMETER_VALUE"
        logger.info("Artifact error on %s %s withheld from the client: %s", scope["method"],
                    scope["path"][:200], text[:500])
        await send_error(send, status, code, "The artifact request failed (details are in the "
                         "server log)")
