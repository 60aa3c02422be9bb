"""A user's pattern grants and groups read once per filtered search, not once per row.

When an entry of mlflow-oidc-auth's permission cache has expired
(``auth.permission_cache_seconds``), the registry searches' filter resolves each row's model on
its own, in five auth-database sessions. Three of them read the same per-user lists every time:
the user's model pattern grants, the user's group ids and those groups' model pattern grants.
A non-admin's 25-model page took ~300 ms once per cache period per worker where it takes ~15 ms
otherwise (``bench/scale.py --keycloak``: slow calls 30 s apart).

Experiments (the experiment and logged-model searches) are resolved the same way, with the
experiment pattern lists. While one of these searches is filtered (``registry_filter.py`` for
the registry's, the handlers wrapped here for the others), these reads are memoized by argument
for that one request. Nothing else changes: mlflow-oidc-auth's own functions decide, in
its order, from the same rows, read once instead of once per row (answers may already be up to
the permission cache's period old, so a grant changed during the request is no new case).
Callers get a copy of a memoized list. Outside a filtered search the reads are mlflow-oidc-auth's
as they are. tests/server/patches/test_grant_reads.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from mlflow_stack.server.guards import Shape, wrapping

STORE = "mlflow_oidc_auth.sqlalchemy_store"
#: The per-user reads each row's resolution repeats (``_build_registered_model_sources``,
#: ``_build_experiment_sources``).
READS = (
    Shape(STORE, "SqlAlchemyStore.list_registered_model_regex_permissions", ("self", "username")),
    Shape(STORE, "SqlAlchemyStore.get_groups_ids_for_user", ("self", "username")),
    Shape(STORE, "SqlAlchemyStore.list_group_registered_model_regex_permissions_for_groups_ids",
          ("self", "group_ids")),
    Shape(STORE, "SqlAlchemyStore.list_experiment_regex_permissions", ("self", "username")),
    Shape(STORE, "SqlAlchemyStore.list_group_experiment_regex_permissions_for_groups_ids",
          ("self", "group_ids")),
)
HOOKS = "mlflow_oidc_auth.hooks.after_request"
HANDLERS = Shape(HOOKS, "AFTER_REQUEST_HANDLERS")
#: The experiment searches' filters (the registry's are registry_filter's).
FILTERS = (Shape(HOOKS, "_filter_search_experiments", ("resp",)),
           Shape(HOOKS, "_filter_search_logged_models", ("resp",)))
UPSTREAM = (*READS, HANDLERS, *FILTERS)

# Per request (a context variable: each request's thread or task has its own, or none).
_MEMO: ContextVar[dict[tuple[Any, ...], Any] | None] = ContextVar("grant_reads", default=None)


@contextlib.contextmanager
def once_per_request() -> Iterator[None]:
    """Within the block, the per-user reads are made once per argument."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _memoized(original: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @wrapping(original)
    def read(self: Any, argument: Any) -> Any:
        memo = _MEMO.get()
        key_part = tuple(argument) if isinstance(argument, list) else argument
        if memo is None or not isinstance(key_part, str | int | tuple):
            return original(self, argument)
        key = (original.__name__, id(self), key_part)
        if key not in memo:
            memo[key] = original(self, argument)  # an exception is not memoized: raised again
        found = memo[key]
        return list(found) if isinstance(found, list) else found

    setattr(read, "grant_reads", True)  # noqa: B010  (a marker on a function)
    return read


def _in_one_memo(original: Callable[[Any], None]) -> Callable[[Any], None]:
    @wrapping(original)
    def filtered(resp: Any) -> None:
        with once_per_request():
            original(resp)

    # route_policy tells filtered routes by the handler's name (``_filter_*``).
    filtered.__name__ = original.__name__
    filtered.__qualname__ = original.__qualname__
    setattr(filtered, "grant_reads", True)  # noqa: B010  (a marker on a function)
    return filtered


def apply(app: Any = None) -> None:
    """Wrap the reads on mlflow-oidc-auth's store class, and the experiment searches' filters
    where mlflow-oidc-auth looks them up per request (idempotent)."""
    originals = [shape.require() for shape in READS]
    filters = [shape.require() for shape in FILTERS]
    handlers: dict[tuple[str, str], Any] = HANDLERS.require()
    for shape, original in zip(READS, originals, strict=True):
        if not getattr(original, "grant_reads", False):
            setattr(shape.owner(), shape.name, _memoized(original))
    wrapped = {f: _in_one_memo(f) for f in filters}
    for route, handler in list(handlers.items()):
        if handler in wrapped:
            handlers[route] = wrapped[handler]
