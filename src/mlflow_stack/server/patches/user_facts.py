"""User state read at most every few seconds.

mlflow-oidc-auth reads a user's admin/active flags from the auth DB on every request, on the
event loop. Here an active user's flags are kept per process for
``MLFLOW_STACK_USER_CACHE_SECONDS`` (default 10): deactivating a user takes effect within that
time, a newly seen token always reads them fresh (bearer_auth.py drops the entry, so a role
change applies with the next token), and inactive or unknown users are never cached.
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.server.caches import ExpiringCache
from mlflow_stack.server.guards import Shape, wrapping
from mlflow_stack.server.tunables import seconds

FACTS = Shape("mlflow_oidc_auth.middleware.auth_middleware",
              "AuthMiddleware._get_user_auth_facts", ("self", "username"))
UPSTREAM = (FACTS,)

#: The admin/active facts of users, per process; dropped when a role sync may change them.
USER_FACTS: ExpiringCache[str, Any] = ExpiringCache()


def apply() -> None:
    original = FACTS.require()
    ttl = seconds("MLFLOW_STACK_USER_CACHE_SECONDS", 10.0)

    @wrapping(original)
    def facts_cached(self: Any, username: str) -> Any:
        hit = USER_FACTS.get(username)
        if hit is not None:
            return hit
        facts = original(self, username)
        if facts[1] and not facts[2]:  # active and no denial: only those are kept
            USER_FACTS.put(username, facts, ttl)
        return facts

    FACTS.owner()._get_user_auth_facts = facts_cached
