"""A request that carries no body is not parsed for one (speed; the same decisions).

mlflow-oidc-auth reads the body MLflow would parse (``dual_spelling_guard._request_body``) to
find every resource a request names, also on a GET: MLflow's JSON reader is forced over the
empty body and fails quietly, a raised and caught exception on every such call (~20-40 µs of
a metric-history call). A request with neither ``Content-Length`` nor ``Transfer-Encoding``
has no body at the HTTP level, and werkzeug reads none for it either (without a length it
gives an empty stream, unless the server marks the input terminated): the guard's answer
is "no body", as upstream's function answers for it. Every other request, ``Content-Length:
0`` included, goes through upstream's function. tests/server/patches/test_empty_body.py.
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.server.guards import Shape, wrapping

BODY = Shape("mlflow_oidc_auth.hooks.dual_spelling_guard", "_request_body", ("req",))
UPSTREAM = (BODY,)


def has_body(environ: dict[str, Any]) -> bool:
    """Whether werkzeug may read a body for this WSGI request."""
    return bool(environ.get("CONTENT_LENGTH") or environ.get("HTTP_TRANSFER_ENCODING")
                or environ.get("wsgi.input_terminated"))


def apply() -> None:
    original = BODY.require()
    if getattr(original, "skips_empty", False):
        return

    @wrapping(original)
    def _request_body(req: Any) -> Any:
        if not has_body(req.environ):
            return None
        return original(req)

    _request_body.skips_empty = True  # type: ignore[attr-defined]
    BODY.owner()._request_body = _request_body
