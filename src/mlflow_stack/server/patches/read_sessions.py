"""Read-only store sessions do not expire their objects on commit (speed; no data kept).

MLflow's SQL stores open one session per store call (``ManagedSessionMaker``), build their
entities inside it, commit when the call's block ends and close the session. Committing expires
every object the session loaded so that a later access reloads it; nothing accesses them
later: the session is closed right after and its identity map dropped with it. For the
experiment page's search (100 runs: ~4,100 rows of runs, params, tags and metrics) that
bookkeeping cost ~30 ms (a third more than the same search without it, bench/scale.py's
machine).

Here a session MLflow opens with ``read_only=True`` (its default; writes pass ``read_only=False``,
and MLflow's own test suite fails any flush in a read-only session) gets
``expire_on_commit = False``. Why no stale data can be served: a session lives for one store
call and starts with an empty identity map, so every call, in every request, reads from the
database; nothing is cached across calls. Write sessions are unchanged.

Applied before any store exists (stores are built on a worker's first request): the tracking
store reaches the session factory through ``mlflow.store.db.utils`` (also its read-replica
routing), the registry store through its own imported name; both are replaced.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mlflow_stack.server.guards import Shape, UpstreamChanged, wrapping

PARAMS = ("SessionMaker", "db_type")
FACTORY = Shape("mlflow.store.db.utils", "_get_managed_session_maker", PARAMS)
REGISTRY = Shape("mlflow.store.model_registry.sqlalchemy_store", "_get_managed_session_maker",
                 PARAMS)
UPSTREAM = (FACTORY, REGISTRY)


def no_expire_on_read(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` whose read-only sessions keep their objects loaded at commit."""

    @wrapping(original)
    def _get_managed_session_maker(SessionMaker: Any, db_type: str) -> Any:
        make = original(SessionMaker, db_type)

        @contextmanager
        def make_managed_session(read_only: bool = True) -> Iterator[Any]:
            with make(read_only=read_only) as session:
                if read_only:
                    session.expire_on_commit = False
                yield session

        return make_managed_session

    return _get_managed_session_maker


def _check_session_factory(original: Callable[..., Any]) -> None:
    """What it returns must still take ``read_only`` (and nothing else)."""
    from sqlalchemy.orm import sessionmaker

    made = original(sessionmaker(), "postgresql")  # builds nothing that connects
    found = list(inspect.signature(made).parameters)
    if found != ["read_only"]:
        raise UpstreamChanged(f"{FACTORY.module}.{FACTORY.path}() now returns a factory taking "
                              f"({', '.join(found)}), the patch expects (read_only): revisit it")


def apply() -> None:
    original, registry = FACTORY.require(), REGISTRY.require()
    if registry is not original:
        raise UpstreamChanged(f"{REGISTRY.module}.{REGISTRY.path} is no longer "
                              f"{FACTORY.module}.{FACTORY.path}: revisit the patch")
    if getattr(original, "__wrapped__", None) is not None:
        return  # applied already (both apps imported in one process)
    _check_session_factory(original)
    replacement = no_expire_on_read(original)
    for shape in UPSTREAM:
        setattr(importlib.import_module(shape.module), shape.name, replacement)
