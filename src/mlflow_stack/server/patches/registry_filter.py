"""A registry search page the user may read whole goes out as MLflow wrote it (speed; the same
answer).

For a user who is not an admin, mlflow-oidc-auth's after-request filters of
``registered-models/search`` and ``model-versions/search`` parse MLflow's JSON into a protobuf,
check every row's model (``_cached_can_read_registered_model``), top a short page up from the
following pages and write the JSON again: ~3 ms of a 25-model page even when nothing is removed.
Upstream already spares its logged-model filter that work when it would change nothing
(``_search_logged_models_needs_no_filtering``); this does the same for the registry searches.

The filter is skipped only when it would return the body unchanged, by its own rules, checked
with its own per-request-memoized functions: the user is no admin (for an admin the filter
returns at once anyway), the search's workspace is readable (``_search_scope_denied``), every
row of the JSON names a model the user may read, and there is nothing to top up (no further
page, or the page already holds ``max_results`` rows: the top-up runs only while it is short).
Anything else, including a body of another shape, runs mlflow-oidc-auth's filter as it is.
Either way a user's pattern grants and groups are read once for the request, not once per row
(``grant_reads.py``: the rows of a page whose permissions are no longer cached). The
filter functions the equivalence rests on are pinned by source digest (``mirrors.changed``):
another mlflow-oidc-auth leaves its filters alone, with a warning, until this is checked again.
tests/server/patches/test_registry_filter.py; tests/server/test_attacks_access.py pages a
search with a hidden model through the live server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mlflow_stack.server.guards import Shape, wrapping
from mlflow_stack.server.mirrors import changed
from mlflow_stack.server.patches import grant_reads

log = logging.getLogger(__name__)

HOOKS = "mlflow_oidc_auth.hooks.after_request"
MODELS = Shape(HOOKS, "_filter_search_registered_models", ("resp",))
VERSIONS = Shape(HOOKS, "_filter_search_model_versions", ("resp",))
HANDLERS = Shape(HOOKS, "AFTER_REQUEST_HANDLERS")
READABLE = Shape(HOOKS, "_cached_can_read_registered_model", ("model_name", "username"))
SCOPE = Shape(HOOKS, "_search_scope_denied", ("username",))
UPSTREAM = (MODELS, VERSIONS, HANDLERS, READABLE, SCOPE)

#: What "the filter would change nothing" rests on, by SHA-256 of the source checked.
PINS: dict[str, str] = {
    f"{HOOKS}:_filter_search_registered_models":
        "ddc286bcdf29feb3d532b486d65faa115c44f8e0d32c8793a26a635ccd5f0461",
    f"{HOOKS}:_filter_search_model_versions":
        "c5758146c7ac78532b8e3fba03d5a0c5b787f83ca4e54fc83900fbbcbaeda07e",
    f"{HOOKS}:_top_up_page":
        "bf55ffd3ff1629241138fb9548f66268d48205a220885a337bec752983dd7c1d",
    f"{HOOKS}:_cached_can_read_registered_model":
        "e6d268908d492f882ae08bf5e2cc3e7745e5e155c31140ead40b8e476a0b9734",
    f"{HOOKS}:after_request_hook":
        "b354114abee9898d0440658d3baab0f278f5fb67c3640171f2fe2d58b4c6b6a3",
}


def unchanged(payload: Any, rows_key: str, max_results: Callable[[], int],
              readable: Callable[[str], bool]) -> bool:
    """Whether the filter would leave this body as it is: every row's model ``readable``, and
    no top-up (no next page, or a full page). False for anything unexpected. ``max_results``
    is asked only for a page with more behind it (it parses the request again)."""
    if not isinstance(payload, dict):
        return False
    rows = payload.get(rows_key, [])
    if not isinstance(rows, list):
        return False
    if payload.get("next_page_token") and len(rows) < max_results():
        return False  # a row was missing from a page that has more behind it: top-up path
    for row in rows:
        name = row.get("name") if isinstance(row, dict) else None
        if not isinstance(name, str) or not readable(name):
            return False
    return True


def _skipping(original: Callable[[Any], None], rows_key: str,
              request_type: Any) -> Callable[[Any], None]:
    from mlflow_oidc_auth.bridge import get_fastapi_admin_status, get_fastapi_username
    from mlflow_oidc_auth.hooks import after_request as hooks

    @wrapping(original)
    def filtered(resp: Any) -> None:
        with grant_reads.once_per_request():  # rows resolved on a cold cache share user reads
            if not get_fastapi_admin_status():
                username = get_fastapi_username()
                if not hooks._search_scope_denied(username):
                    def max_results() -> int:
                        return int(hooks._get_request_message(request_type()).max_results)

                    if unchanged(resp.json, rows_key, max_results,
                                 lambda name: hooks._cached_can_read_registered_model(
                                     name, username)):
                        return
            original(resp)

    # route_policy tells filtered routes by the handler's name (``_filter_*``).
    filtered.__name__ = original.__name__
    filtered.__qualname__ = original.__qualname__
    setattr(filtered, "registry_filter", True)  # noqa: B010  (a marker on a function)
    return filtered


def install() -> list[str]:
    """Wrap both filters where mlflow-oidc-auth looks them up per request (idempotent); the
    routes now wrapped. Another mlflow-oidc-auth (a pinned function changed): none, a warning."""
    from mlflow.protos import model_registry_pb2

    differs = changed(PINS)
    if differs:
        log.warning("registry search filters: mlflow-oidc-auth's own (these changed since the "
                    "shortcut was checked: %s)", ", ".join(differs))
        return []
    handlers: dict[tuple[str, str], Any] = HANDLERS.require()
    # Each filter, wrapped once, with the field its rows are in and the message it pages by.
    models, versions = MODELS.require(), VERSIONS.require()
    replacements = {
        models: _skipping(models, "registered_models", model_registry_pb2.SearchRegisteredModels),
        versions: _skipping(versions, "model_versions", model_registry_pb2.SearchModelVersions),
    }
    routes = []
    for route, handler in list(handlers.items()):
        if handler in replacements:
            handlers[route] = replacements[handler]
        elif not getattr(handler, "registry_filter", False):
            continue
        routes.append(route[0])
    return routes


def apply(app: Any = None) -> None:
    """On the SSO app's after-request filters (the routes are mapped once the app is built)."""
    for shape in UPSTREAM:
        shape.require()
    install()
