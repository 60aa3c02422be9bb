"""mlflow-oidc-auth's app with the gaps our deployment cannot accept closed.

Registered as the ``mlflow.app`` entry point ``mlflow-stack-sso`` (``mlflow server --app-name
mlflow-stack-sso``). It is mlflow-oidc-auth's own app, plus two patches applied before it is
built:

1. **Bounded key-set refresh.** mlflow-oidc-auth re-fetches discovery + JWKS from the IdP for
   every token whose signature does not verify, so a flood of forged tokens becomes a flood
   against Keycloak. Here a forced refresh happens at most once per
   ``MLFLOW_STACK_JWKS_MIN_REFRESH_SECONDS`` (default 60) per key source and process; key
   rotation still works (a new ``kid`` is picked up within that interval).
2. **Roles follow the token.** mlflow-oidc-auth records a user's groups and admin flag at first
   sight and never re-reads them from later bearer tokens, so a role taken away in Keycloak
   keeps working. Here every bearer request re-derives the groups from the verified claims
   (through the configured group-detection plugin): without the user or admin role the request
   is refused, and changed groups or admin status are written to the auth DB. Decisions are
   cached per (user, groups) for ``MLFLOW_STACK_GROUP_SYNC_SECONDS`` (default 60) so the common
   case costs no query.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

_PATCHED = False


def _seconds(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------
# 1. JWKS refresh limit


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


def _patch_jwks_refresh() -> None:
    from mlflow_oidc_auth import auth

    original = auth._load_jwks
    limiter = RefreshLimiter(_seconds("MLFLOW_STACK_JWKS_MIN_REFRESH_SECONDS", 60.0))

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

    auth._load_jwks = limited_load_jwks


# --------------------------------------------------------------------------------------------
# 2. group / admin re-sync from bearer tokens

_VALIDATED_CLAIMS: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "mlflow_stack_validated_claims", default=None)


class GroupSync:
    """Remembers, per user, the groups last synced to the auth DB and whether they admitted.

    A request whose token carries the same groups within ``ttl`` needs no query; any change of
    groups (a role granted or taken in Keycloak) misses and is synced.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._seen: dict[str, tuple[tuple[str, ...], float, bool]] = {}
        self._lock = threading.Lock()

    def cached(self, username: str, groups: tuple[str, ...]) -> bool | None:
        with self._lock:
            hit = self._seen.get(username)
        if hit is None or hit[0] != groups or self._clock() - hit[1] >= self.ttl:
            return None
        return hit[2]

    def remember(self, username: str, groups: tuple[str, ...], allowed: bool) -> None:
        with self._lock:
            if len(self._seen) > 10_000:  # bounded: a long-running worker sees many users
                self._seen.clear()
            self._seen[username] = (groups, self._clock(), allowed)


def admission(groups: list[str], user_groups: list[str], admin_groups: list[str],
              patterns: list[str]) -> tuple[bool, bool]:
    """(allowed, is_admin) for these groups, the same gate as interactive login."""
    from mlflow_oidc_auth.group_patterns import admitting_rule

    is_admin = any(g in admin_groups for g in groups)
    allowed = is_admin or admitting_rule(groups, user_groups, patterns) is not None
    return allowed, is_admin


def _sync_user(username: str, groups: list[str], is_admin: bool) -> None:
    """Write the token's groups and admin flag if they differ from the auth DB."""
    from mlflow_oidc_auth.provider_registry import DEFAULT_PROVIDER_ID
    from mlflow_oidc_auth.store import store

    if not store.has_user(username):
        return  # first sight: mlflow-oidc-auth's own provisioning has just run (or refused)
    written_by = f"oidc:{DEFAULT_PROVIDER_ID}"
    profile = store.get_user_profile(username)
    if bool(profile.is_admin) != is_admin:
        store.update_user(username=username, is_admin=is_admin, written_by=written_by)
        logger.info("Bearer sync: %s admin=%s from the token's roles", username, is_admin)
    current = sorted(store.get_groups_for_user(username))
    if current != sorted(groups):
        store.populate_groups(group_names=groups, written_by=written_by)
        store.set_user_groups(username, groups, written_by=written_by)
        logger.info("Bearer sync: %s groups updated from the token's roles", username)


def _groups_from(token: str, claims: Mapping[str, Any]) -> list[str]:
    from mlflow_oidc_auth.config import config
    from mlflow_oidc_auth.group_patterns import normalize_group_values
    from mlflow_oidc_auth.utils.group_detection import call_group_detection_plugin

    if config.OIDC_GROUP_DETECTION_PLUGIN:
        raw = call_group_detection_plugin(config.OIDC_GROUP_DETECTION_PLUGIN, token,
                                          {"access_token": token, "claims": dict(claims)})
    else:
        raw = claims.get(config.OIDC_GROUPS_ATTRIBUTE, [])
    return list(normalize_group_values(raw))


def _patch_bearer_sync() -> None:
    from mlflow_oidc_auth.config import config
    from mlflow_oidc_auth.middleware import auth_middleware

    sync = GroupSync(_seconds("MLFLOW_STACK_GROUP_SYNC_SECONDS", 60.0))
    original_validate = auth_middleware.validate_token
    original_bearer = auth_middleware.AuthMiddleware._authenticate_bearer_token

    def validate_and_keep(token: str) -> Any:
        payload = original_validate(token)
        _VALIDATED_CLAIMS.set(payload)
        return payload

    async def bearer_with_sync(self: Any, auth_header: str) -> tuple[bool, str | None, str]:
        marker = _VALIDATED_CLAIMS.set(None)
        try:
            ok, username, error = await original_bearer(self, auth_header)
            claims = _VALIDATED_CLAIMS.get()
        finally:
            _VALIDATED_CLAIMS.reset(marker)
        # Only tokens of our own issuer carry our roles (service-account and other providers'
        # tokens keep mlflow-oidc-auth's handling).
        if not ok or not username or claims is None or claims.get("iss") != config.OIDC_ISSUER:
            return ok, username, error
        token = auth_header.split(" ", 1)[1]
        try:
            groups = _groups_from(token, claims)
            key = tuple(sorted(groups))
            allowed = sync.cached(username, key)
            if allowed is None:
                allowed, is_admin = admission(groups, list(config.OIDC_GROUP_NAME),
                                              list(config.OIDC_ADMIN_GROUP_NAME),
                                              list(config.OIDC_GROUP_NAME_PATTERN))
                _sync_user(username, groups, is_admin)
                sync.remember(username, key, allowed)
        except Exception as exc:  # fail closed: a sync we cannot do must not grant access
            logger.warning("Bearer sync for %s failed: %s", username, type(exc).__name__)
            return False, None, "Could not check the token's roles"
        if not allowed:
            return False, None, "Not in an allowed group"
        return ok, username, error

    auth_middleware.validate_token = validate_and_keep
    auth_middleware.AuthMiddleware._authenticate_bearer_token = bearer_with_sync


def install() -> None:
    """Apply both patches once (idempotent)."""
    global _PATCHED, logger
    if _PATCHED:
        return
    from mlflow_oidc_auth.logger import get_logger

    logger = get_logger()  # the server's configured log, so our decisions show up beside its own
    _patch_jwks_refresh()
    _patch_bearer_sync()
    _PATCHED = True


install()

from mlflow_oidc_auth.app import app  # noqa: E402  (patched modules first, then the app)

__all__ = ["app", "install"]
