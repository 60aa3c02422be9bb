"""The MCP registry's route prefixes worked out once per static prefix (speed).

mlflow-oidc-auth asks, twice per request, whether the path is on MLflow's MCP server
registry, and each time builds the list of prefixes again (imports, MLflow's static prefix
from the environment, a sort): ~13 µs of every request. The prefixes depend only on MLflow's
static prefix (``_MLFLOW_STATIC_PREFIX``, what ``--static-prefix`` sets), so they are
remembered per value of it (read on every call, as upstream reads it).
tests/server/patches/test_mcp_prefixes.py.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from mlflow_stack.server.guards import Shape, wrapping

PREFIXES = Shape("mlflow_oidc_auth.middleware.mcp_server_registry", "mcp_route_prefixes", ())
STATIC_PREFIX = Shape("mlflow.server.handlers", "STATIC_PREFIX_ENV_VAR")
UPSTREAM = (PREFIXES, STATIC_PREFIX)


def apply(app: Any) -> None:
    """On the built app (``app`` unused): the registry module's own function replaced."""
    original = PREFIXES.require()
    variable = STATIC_PREFIX.require()
    if getattr(original, "per_static_prefix", False):
        return  # applied already

    @functools.lru_cache(maxsize=8)
    def for_prefix(static_prefix: str | None) -> tuple[str, ...]:
        prefixes: tuple[str, ...] = original()
        return prefixes

    @wrapping(original)
    def mcp_route_prefixes() -> tuple[str, ...]:
        return for_prefix(os.environ.get(variable))

    mcp_route_prefixes.per_static_prefix = True  # type: ignore[attr-defined]
    PREFIXES.owner().mcp_route_prefixes = mcp_route_prefixes
