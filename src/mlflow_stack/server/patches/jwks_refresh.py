"""Bounded key-set refresh.

mlflow-oidc-auth re-fetches discovery + JWKS from the IdP for every token whose signature does
not verify, so a flood of forged tokens becomes a flood against Keycloak. Here a forced refresh
happens at most once per ``MLFLOW_STACK_JWKS_MIN_REFRESH_SECONDS`` (default 60) per key source
and process; key rotation still works (a new ``kid`` is picked up within that interval).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow_stack.server.guards import Shape, wrapping
from mlflow_stack.server.tunables import seconds

LOAD_JWKS = Shape("mlflow_oidc_auth.auth", "_load_jwks",
                  ("url", "cache", "lock", "cache_key", "force_refresh", "label", "direct",
                   "verify", "auth_token"))
UPSTREAM = (LOAD_JWKS,)


class RefreshLimiter:
    """Allows a forced key-set refresh per key source at most once per ``interval`` seconds.

    Any fetch (first load or forced) starts the interval, so a forged token right after start-up
    finds fresh keys and fetches nothing.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[object, float] = {}
        self._lock = threading.Lock()

    def allow_forced(self, key: object) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            self._last[key] = now
            return True

    def note_fetch(self, key: object) -> None:
        with self._lock:
            self._last[key] = self._clock()


def apply() -> None:
    original = LOAD_JWKS.require()
    limiter = RefreshLimiter(seconds("MLFLOW_STACK_JWKS_MIN_REFRESH_SECONDS", 60.0))

    @wrapping(original)
    def limited_load_jwks(url: str, *, cache: Any, lock: Any, cache_key: object,
                          force_refresh: bool, **kwargs: Any) -> Any:
        if force_refresh:
            if not limiter.allow_forced(cache_key):
                # Keys were fetched moments ago: a token they do not verify is not signed by
                # the IdP. Answer from the cache instead of asking the IdP again.
                force_refresh = False
        else:
            with lock:
                missing = cache.get(cache_key) is None
            if missing:
                limiter.note_fetch(cache_key)
        return original(url, cache=cache, lock=lock, cache_key=cache_key,
                        force_refresh=force_refresh, **kwargs)

    LOAD_JWKS.owner()._load_jwks = limited_load_jwks
