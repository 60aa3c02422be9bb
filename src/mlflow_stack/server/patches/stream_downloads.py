"""Artifact downloads through the server stream from S3: no temporary copy (issue 15 §3).

Plain MLflow clients download files under ``MLFLOW_MULTIPART_DOWNLOAD_MINIMUM_FILE_SIZE``
(500 MiB by default) through the server (``GET /api/2.0/mlflow-artifacts/artifacts/<path>``),
and the UI through ``get-artifact`` (MLflow's ``_send_artifact``). MLflow's handlers (the
Flask view the SSO app serves, the FastAPI route MLflow's own app serves, ``_send_artifact``)
first download the whole file from S3 into a temporary directory on the server, then send
that copy: a 400 MiB model costs 400 MiB of the pod's disk (its
ephemeral-storage limit), and the client waits for all of it before the first byte.

Here all three send the S3 object's body as it arrives, 1 MiB at a time, with its length,
its type and MLflow's attachment headers. Everything else stays MLflow's: the path checks and
workspace scoping come first, through MLflow's own functions; a path that is no object (a
directory, nothing) and a request with ``Range`` or conditional headers (MLflow's Flask view
answers those from its copy) are handed to MLflow's handler unchanged, as is any repository
other than mlflow-stack's ``s3`` one (``server/s3_repository.py``: ``open_object``).
Permissions are checked before any of them runs, so nothing changes there.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Awaitable, Callable
from typing import Any

from mlflow_stack.server.guards import Shape, wrapping

HANDLERS = "mlflow.server.handlers"
ROUTER = "mlflow.server.artifact_router"
VIEW = Shape(HANDLERS, "_download_artifact", ("artifact_path",))
SAFE = Shape(HANDLERS, "validate_path_is_safe", ("path",))
SCOPE = Shape(HANDLERS, "_get_workspace_scoped_repo_path_if_enabled", ("artifact_path",))
REPO = Shape(HANDLERS, "_get_artifact_repo_mlflow_artifacts", ())
ATTACHMENT = Shape(HANDLERS, "_response_with_file_attachment_headers", ("file_path", "response"))
DISPOSITION = Shape(HANDLERS, "_content_disposition_attachment", ("filename",))
SERVING_ONLY = Shape(HANDLERS, "_disable_unless_serve_artifacts", ("func",))
SEND = Shape(HANDLERS, "_send_artifact", ("artifact_repository", "path"))
ROUTE = Shape(ROUTER, "download_artifact", ("artifact_path",))
ROUTE_SERVING = Shape(ROUTER, "_is_serving_proxied_artifacts", ())
ROUTE_REPO = Shape(ROUTER, "_get_artifact_repo", ())
ROUTE_SCOPE = Shape(ROUTER, "_get_workspace_scoped_path", ("artifact_path",))
ROUTE_SAFE = Shape(ROUTER, "validate_path_is_safe", ("path",))
MIME = Shape("mlflow.utils.mime_type_utils", "_guess_mime_type", ("file_path",))
UPSTREAM = (VIEW, SAFE, SCOPE, REPO, ATTACHMENT, DISPOSITION, SERVING_ONLY, SEND, ROUTE,
            ROUTE_SERVING,
            ROUTE_REPO, ROUTE_SCOPE, ROUTE_SAFE, MIME)

#: Requests MLflow's Flask view answers from its copy with 206/304/412 semantics.
CONDITIONAL = ("range", "if-range", "if-none-match", "if-modified-since", "if-match",
               "if-unmodified-since")
MARKER = "mlflow_stack_streams"


def open_stream(repo: Any, path: str) -> Any:
    """The object at ``path`` from mlflow-stack's S3 repository, or None (MLflow answers)."""
    opener = getattr(repo, "open_object", None)
    return opener(path) if opener is not None else None


def _headers(path: str, size: int) -> dict[str, str]:
    """What MLflow's handlers send with a file (type by name, attachment, nosniff) + length."""
    name = posixpath.basename(path)
    mime: str = MIME.require()(name)
    disposition: str = DISPOSITION.require()(name)
    return {"Content-Type": mime, "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff", "Content-Length": str(size)}


def _streamed(repo: Any, path: str) -> Any:
    """The Flask response streaming ``path`` from ``repo``, as MLflow's handlers would send the
    file; None when MLflow's handler should answer (not our repository, no such object, a
    Range or conditional request)."""
    from flask import current_app, request

    if any(name in request.headers for name in CONDITIONAL):
        return None
    opened = open_stream(repo, path)
    if opened is None:
        return None
    headers = _headers(path, opened.size)
    response = current_app.response_class(opened.chunks(), direct_passthrough=True,
                                          mimetype=headers["Content-Type"])
    response.content_length = opened.size
    if opened.last_modified is not None:
        response.last_modified = opened.last_modified
    response.cache_control.no_cache = True
    response.headers["Accept-Ranges"] = "bytes"  # answered by MLflow's handler, from a copy
    response.headers["Content-Disposition"] = headers["Content-Disposition"]
    return VIEW.owner()._response_with_file_attachment_headers(path, response)


def flask_view(original: Callable[[str], Any]) -> Callable[[str], Any]:
    """MLflow's Flask ``_download_artifact`` view, streaming what mlflow-stack's S3 repository
    can open."""
    handlers = VIEW.owner()

    @wrapping(original)
    def _download_artifact(artifact_path: str) -> Any:
        path = handlers.validate_path_is_safe(artifact_path)
        path = handlers._get_workspace_scoped_repo_path_if_enabled(path)
        response = _streamed(handlers._get_artifact_repo_mlflow_artifacts(), path)
        return original(artifact_path) if response is None else response

    view: Callable[[str], Any] = handlers.catch_mlflow_exception(
        handlers._disable_unless_serve_artifacts(_download_artifact))
    setattr(view, MARKER, True)
    return view


def send_artifact(original: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """MLflow's ``_send_artifact`` (the UI's ``get-artifact`` and the registry's
    ``model-versions/get-artifact``: the path and access are resolved before it), streaming
    what mlflow-stack's S3 repository can open."""

    @wrapping(original)
    def _send_artifact(artifact_repository: Any, path: str) -> Any:
        response = _streamed(artifact_repository, path)
        return original(artifact_repository, path) if response is None else response

    setattr(_send_artifact, MARKER, True)
    return _send_artifact


def fastapi_endpoint(original: Callable[[str], Awaitable[Any]]
                     ) -> Callable[[str], Awaitable[Any]]:
    """MLflow's FastAPI ``download_artifact`` route, streaming what mlflow-stack's S3
    repository can open."""
    router = ROUTE.owner()
    from starlette.responses import StreamingResponse

    @wrapping(original)
    async def download_artifact(artifact_path: str) -> Any:
        if not router._is_serving_proxied_artifacts():
            return await original(artifact_path)
        try:
            path = router.validate_path_is_safe(artifact_path)
            path = router._get_workspace_scoped_path(path)
            repo = router._get_artifact_repo()
        except Exception:
            return await original(artifact_path)
        opened = await asyncio.to_thread(open_stream, repo, path)
        if opened is None:
            return await original(artifact_path)
        return StreamingResponse(opened.chunks(), headers=_headers(path, opened.size))

    return download_artifact


def _serves_mlflow_routes(app: Any, original: Any) -> bool:
    """Whether ``app`` has MLflow's download route: copied in (older FastAPI) or as an included
    router that still refers to MLflow's ``artifact_router`` (FastAPI 0.165)."""
    router = ROUTE.owner().artifact_router
    return any(getattr(route, "endpoint", None) is original
               or getattr(route, "original_router", None) is router
               for route in getattr(getattr(app, "router", None), "routes", []))


def _route_ahead(app: Any) -> None:
    """On an app that serves MLflow's download routes (MLflow's own app), the streaming
    endpoint for the same paths, matched first. An app without them (the SSO app, whose
    downloads go through the Flask view and its permission checks) is left alone: a route
    there would bypass those checks."""
    from fastapi.routing import APIRoute

    original = ROUTE.require()
    if not _serves_mlflow_routes(app, original):
        return
    routes = app.router.routes
    if any(getattr(getattr(route, "endpoint", None), MARKER, False) for route in routes):
        return
    endpoint = fastapi_endpoint(original)
    setattr(endpoint, MARKER, True)
    for path in ("/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
                 "/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}"):
        routes.insert(0, APIRoute(path, endpoint, methods=["GET"], name="download_artifact"))


def apply(app: Any = None) -> None:
    """MLflow's Flask view (both apps) and, on MLflow's own FastAPI app, its routes."""
    for shape in UPSTREAM:
        shape.require()
    from mlflow.server import app as flask_app

    original = flask_app.view_functions[VIEW.name]
    if not getattr(original, MARKER, False):
        flask_app.view_functions[VIEW.name] = flask_view(original)
    handlers = VIEW.owner()
    if not getattr(handlers._send_artifact, MARKER, False):
        handlers._send_artifact = send_artifact(handlers._send_artifact)
    if app is not None:
        _route_ahead(app)
