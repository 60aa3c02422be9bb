"""mlflow-oidc-auth's app with the gaps our deployment cannot accept closed.

Registered as the ``mlflow.app`` entry point ``mlflow-stack-sso`` (``mlflow server --app-name
mlflow-stack-sso``). It is mlflow-oidc-auth's own app, plus patches applied before it is built:

1. **Bounded key-set refresh.** mlflow-oidc-auth re-fetches discovery + JWKS from the IdP for
   every token whose signature does not verify, so a flood of forged tokens becomes a flood
   against Keycloak. Here a forced refresh happens at most once per
   ``MLFLOW_STACK_JWKS_MIN_REFRESH_SECONDS`` (default 60) per key source and process; key
   rotation still works (a new ``kid`` is picked up within that interval).
2. **Roles follow the token.** mlflow-oidc-auth records a user's groups and admin flag at first
   sight and never re-reads them from later bearer tokens, so a role taken away in Keycloak
   keeps working. Here every newly seen bearer token re-derives the groups from the verified
   claims (through the configured group-detection plugin): without the user or admin role the
   request is refused, and changed groups or admin status are written to the auth DB. This runs
   for every new token in every worker process (a repeated token is answered by the verified-
   token cache, 5. below): a per-process "already synced these groups" shortcut was wrong with
   several workers, where another process may have written other roles since.
3. **Every route checks the Host header.** MLflow's DNS-rebinding check lives in the Flask app
   mlflow-oidc-auth mounts; its own routes (login, callback, permission UI and API) skipped
   it. MLflow's HostValidationMiddleware, with the same allowed hosts, now wraps the whole app.

The rest is speed (the "SSO tax" of ``bench/sso_tax.py``); none of it weakens a check:

4. **Flask on a thread pool.** mlflow-oidc-auth mounts MLflow's Flask app through asgiref's
   ``WsgiToAsgi``, which runs every request of a worker on *one* shared thread, one after the
   other; plain ``mlflow server`` runs them on a pool. Here the same adapter (same body
   spooling, same auth context injection) runs on a pool of ``MLFLOW_STACK_FLASK_THREADS``
   (default 40, anyio's default that plain MLflow gets).
5. **A verified token is verified once.** mlflow-oidc-auth checks signature, expiry, audience
   and issuer and then queries the auth DB (does the user exist?) on every request, on the
   event loop. Here a token that passed all of that — and our role check — is remembered,
   keyed by the SHA-256 of the whole token string, until its ``exp`` (and at most
   ``MLFLOW_STACK_TOKEN_CACHE_SECONDS``, default the JWKS cache lifetime, so a verification is
   never trusted longer than the keys behind it). Any other string — a changed signature, a new
   token with new roles — is a miss and goes through every check. Failures are never cached.
6. **User state read at most every few seconds.** The admin/active flags are read from the auth
   DB on every request, on the event loop. Here an active user's flags are kept per process for
   ``MLFLOW_STACK_USER_CACHE_SECONDS`` (default 10): deactivating a user takes effect within
   that time, a newly seen token always reads them fresh (so a role change applies with the next
   token), and inactive or unknown users are never cached.
7. **A run's experiment is looked up once.** Run-level permission checks first ask MLflow's DB
   which experiment a run belongs to, on every request. A run never changes experiment, so the
   answer is kept (bounded) while workspaces are off (with them on, that lookup is also a
   workspace check and stays per request).
8. **Idle layers step aside.** Proxy-header handling with no trusted proxy and workspace
   context with workspaces off do nothing, yet each costs a BaseHTTPMiddleware layer (a task
   group and a streamed copy of the response) per request; then they pass the request on.
9. **Tracking requests go straight to Flask.** MLflow's Flask app is mounted after
   mlflow-oidc-auth's ~45 routers (hundreds of routes), so each tracking request was matched
   against all of them first. A (method, path) no other route serves is recognised once and
   then routed to the mount directly — the same place the router would have sent it.

Measured with ``bench/sso_tax.py`` (3 workers, PostgreSQL, 4 client threads): plain
mlflow-oidc-auth runs log-metric at ~0.5x the requests/s of no auth; this app at ~1.0x.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mlflow_stack.server import access_tokens, identity
from mlflow_stack.server.asgi import send_error
from mlflow_stack.server.caches import ExpiringCache
from mlflow_stack.server.directory import Account
from mlflow_stack.server.guards import require

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
# 2. group / admin re-sync from bearer tokens, 5. verified-token cache, 6. user-state cache

# The admin/active facts of users, per process (6.); dropped when a role sync changes them.
_USER_FACTS: ExpiringCache[str, Any] = ExpiringCache()

_VALIDATED_CLAIMS: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "mlflow_stack_validated_claims", default=None)


@dataclass(frozen=True)
class BearerAuth:
    """What authenticating one bearer token established, replayed while it is cached."""

    username: str
    workload: bool  # mlflow-oidc-auth's _WORKLOAD_BEARER for this token
    identity: object  # mlflow-oidc-auth's _BEARER_IDENTITY: (provider, subject)


def token_key(token: str) -> bytes:
    """The cache key of a token: a digest of the *whole* string (header, claims, signature)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def verified_ttl(claims: Mapping[str, Any], cap: float,
                 now: Callable[[], float] = time.time) -> float:
    """How long a verification of a token with these claims may be reused: until ``exp``, at
    most ``cap``. 0 (do not cache) without a numeric ``exp``."""
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return 0.0
    return max(0.0, min(float(exp) - now(), cap))


def admission(groups: list[str], user_groups: list[str], admin_groups: list[str],
              patterns: list[str]) -> tuple[bool, bool]:
    """(allowed, is_admin) for these groups, the same gate as interactive login."""
    from mlflow_oidc_auth.group_patterns import admitting_rule

    is_admin = any(g in admin_groups for g in groups)
    allowed = is_admin or admitting_rule(groups, user_groups, patterns) is not None
    return allowed, is_admin


def _sync_user(username: str, groups: list[str], is_admin: bool) -> bool:
    """Write these groups and admin flag if they differ from the auth DB; True if it did."""
    from mlflow_oidc_auth.provider_registry import DEFAULT_PROVIDER_ID
    from mlflow_oidc_auth.store import store

    if not store.has_user(username):
        return False  # first sight: mlflow-oidc-auth's provisioning has just run (or refused)
    written_by = f"oidc:{DEFAULT_PROVIDER_ID}"
    changed = False
    profile = store.get_user_profile(username)
    if bool(profile.is_admin) != is_admin:
        store.update_user(username=username, is_admin=is_admin, written_by=written_by)
        logger.info("Role sync: %s admin=%s from Keycloak's roles", username, is_admin)
        changed = True
    current = sorted(store.get_groups_for_user(username))
    if current != sorted(groups):
        store.populate_groups(group_names=groups, written_by=written_by)
        store.set_user_groups(username, groups, written_by=written_by)
        logger.info("Role sync: %s groups updated from Keycloak's roles", username)
        changed = True
    return changed


def _admission_of(groups: list[str]) -> tuple[bool, bool]:
    from mlflow_oidc_auth.config import config

    return admission(groups, list(config.OIDC_GROUP_NAME), list(config.OIDC_ADMIN_GROUP_NAME),
                     list(config.OIDC_GROUP_NAME_PATTERN))


def _groups_of_account(account: Account) -> list[str]:
    """The groups the account's current Keycloak roles give, as a token of it would carry."""
    from mlflow_oidc_auth.config import config

    claims: dict[str, Any] = {}
    node = claims
    *parents, leaf = (config.OIDC_GROUPS_ATTRIBUTE or "realm_access.roles").split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = list(account.realm_roles)
    if account.client_roles:
        claims.setdefault("resource_access", {})[config.OIDC_CLIENT_ID] = {
            "roles": list(account.client_roles)}
    return _groups_from("", claims)


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


def _patch_bearer_auth() -> None:
    from mlflow_oidc_auth.config import config
    from mlflow_oidc_auth.middleware import auth_middleware
    from mlflow_oidc_auth.utils.oidc_field_extraction import (
        BEARER_TOKEN_SOURCE,
        extract_username,
    )

    tokens: ExpiringCache[bytes, BearerAuth] = ExpiringCache()
    token_cap = _seconds("MLFLOW_STACK_TOKEN_CACHE_SECONDS",
                         float(config.OIDC_JWKS_CACHE_TTL_SECONDS))
    users = _USER_FACTS
    user_ttl = _seconds("MLFLOW_STACK_USER_CACHE_SECONDS", 10.0)
    middleware = auth_middleware.AuthMiddleware
    original_validate = require(auth_middleware, "validate_token", ["token"])
    original_bearer = require(middleware, "_authenticate_bearer_token", ["self", "auth_header"])
    original_facts = require(middleware, "_get_user_auth_facts", ["self", "username"])

    def validate_and_keep(token: str) -> Any:
        payload = original_validate(token)
        if payload.get("iss") == config.OIDC_ISSUER:
            # Before mlflow-oidc-auth provisions or resolves anything from this token.
            reason = identity.token_type_refusal(payload)
            if reason:
                identity.REFUSAL.set(reason)
                raise identity.IdentityRefused(reason)
            username, _ = extract_username(payload, source=BEARER_TOKEN_SOURCE)
            identity.check(username, payload)
        _VALIDATED_CLAIMS.set(payload)
        return payload

    async def verify_and_sync(self: Any, auth_header: str, token: str,
                              ) -> tuple[bool, str | None, str, Mapping[str, Any] | None]:
        """mlflow-oidc-auth's full bearer check, then our role gate and sync."""
        marker = _VALIDATED_CLAIMS.set(None)
        try:
            ok, username, error = await original_bearer(self, auth_header)
            claims = _VALIDATED_CLAIMS.get()
        finally:
            _VALIDATED_CLAIMS.reset(marker)
        # Only tokens of our own issuer carry our roles (service-account and other providers'
        # tokens keep mlflow-oidc-auth's handling, and are not cached).
        if not ok or not username or claims is None or claims.get("iss") != config.OIDC_ISSUER:
            return ok, username, error, None
        try:
            groups = _groups_from(token, claims)
            allowed, is_admin = _admission_of(groups)
            if allowed:
                identity.bind(username, claims)
            _sync_user(username, groups, is_admin)
        except Exception as exc:  # fail closed: a sync we cannot do must not grant access
            logger.warning("Bearer sync for %s failed: %s", username, type(exc).__name__)
            identity.REFUSAL.set("the token's roles could not be applied to this account (is "
                                 "it MLflow's last administrator? grant mlflow-admin to "
                                 "another user)")
            return False, None, "Could not check the token's roles", None
        if not allowed:
            return False, None, "Not in an allowed group", None
        return ok, username, error, claims

    async def bearer_cached(self: Any, auth_header: str) -> tuple[bool, str | None, str]:
        token = auth_header.split(" ", 1)[1]  # exactly the string mlflow-oidc-auth verifies
        key = token_key(token)
        hit = tokens.get(key)
        if hit is not None:
            # This exact string passed every check before and has not expired: replay what
            # the full path establishes for the rest of the request.
            auth_middleware._WORKLOAD_BEARER.set(hit.workload)
            auth_middleware._BEARER_IDENTITY.set(hit.identity)
            return True, hit.username, ""
        ok, username, error, claims = await verify_and_sync(self, auth_header, token)
        if ok and username and claims is not None:
            # A new token is where role changes arrive: read the user's flags fresh for it.
            users.discard(username)
            tokens.put(key, BearerAuth(username, auth_middleware._WORKLOAD_BEARER.get(),
                                       auth_middleware._BEARER_IDENTITY.get()),
                       verified_ttl(claims, token_cap))
        return ok, username, error

    def facts_cached(self: Any, username: str) -> Any:
        hit = users.get(username)
        if hit is not None:
            return hit
        facts = original_facts(self, username)
        if facts[1] and not facts[2]:  # active and no denial: only those are kept
            users.put(username, facts, user_ttl)
        return facts

    auth_middleware.validate_token = validate_and_keep
    middleware._authenticate_bearer_token = bearer_cached
    middleware._get_user_auth_facts = facts_cached


def _patch_denial_reason() -> None:
    """A credential refused for a reason its holder can act on (their own valid token: an
    unverified email, an ID token, revoked Keycloak access) says so in the 401 body."""
    from fastapi.responses import JSONResponse
    from mlflow_oidc_auth.middleware import auth_middleware

    middleware = auth_middleware.AuthMiddleware
    original = require(middleware, "_deny", ["self", "request", "path"])

    async def deny(self: Any, request: Any, path: str) -> Any:
        reason = identity.REFUSAL.get()
        response = await original(self, request, path)
        if reason and response.status_code == 401:
            return JSONResponse(status_code=401,
                                content={"detail": "Authentication required", "reason": reason})
        return response

    middleware._deny = deny


def _patch_access_tokens(app: Any) -> None:
    """Long-lived access tokens: refused (default) or checked against Keycloak on every use."""
    if access_tokens.enabled():
        access_tokens.patch_basic_auth(access_tokens.default_checker(
            _admission_of, _groups_of_account, _sync_user, _USER_FACTS.discard))
    else:
        app.add_middleware(access_tokens.AccessTokensOff)


# --------------------------------------------------------------------------------------------
# 4. Flask on a thread pool


def _patch_flask_pool() -> None:
    from asgiref.sync import SyncToAsync
    from asgiref.wsgi import WsgiToAsgi, WsgiToAsgiInstance
    from mlflow_oidc_auth.middleware import auth_aware_wsgi_middleware

    threads = int(_seconds("MLFLOW_STACK_FLASK_THREADS", 40.0)) or 40
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlflow-stack-flask")
    # The undecorated method: asgiref wraps it in a thread-sensitive SyncToAsync (one thread).
    wrapped = vars(WsgiToAsgiInstance)["run_wsgi_app"]
    func = wrapped.func if isinstance(wrapped, SyncToAsync) else wrapped

    class PooledInstance(WsgiToAsgiInstance):
        run_wsgi_app = SyncToAsync(func, thread_sensitive=False, executor=pool)

    class PooledWsgiToAsgi(WsgiToAsgi):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            instance = PooledInstance(self.wsgi_application,  # type: ignore[no-untyped-call]
                                      self.duplicate_header_limit)
            await instance(scope, receive, send)

    # AuthAwareWSGIMiddleware builds its adapter per request from this module-level name.
    auth_aware_wsgi_middleware.WSGIMiddleware = PooledWsgiToAsgi


# --------------------------------------------------------------------------------------------
# 7. run -> experiment lookups


def _patch_run_experiment_lookup() -> None:
    import sys

    from mlflow_oidc_auth.config import config
    from mlflow_oidc_auth.utils import data_fetching

    if config.MLFLOW_ENABLE_WORKSPACES:
        return  # the lookup is scoped to the request's workspace: keep it per request
    original = data_fetching.get_run_experiment_id
    known: ExpiringCache[str, str] = ExpiringCache()

    def cached(tracking_store: Any, run_id: str) -> str:
        hit = known.get(run_id)
        if hit is not None:
            return hit
        experiment_id: str = original(tracking_store, run_id)
        known.put(run_id, experiment_id, 24 * 3600.0)  # immutable; the bound is for memory
        return experiment_id

    # The validators import the function by name: replace every such reference.
    for name, module in list(sys.modules.items()):
        if name.startswith("mlflow_oidc_auth") and \
                getattr(module, "get_run_experiment_id", None) is original:
            vars(module)["get_run_experiment_id"] = cached


# --------------------------------------------------------------------------------------------
# 8. idle middleware layers, 9. routing straight to Flask


def _patch_idle_middleware() -> None:
    """Let the two BaseHTTPMiddleware layers that have nothing to do hand the request straight
    on (with a trusted proxy, or workspaces on, their own code runs unchanged)."""
    from mlflow_oidc_auth.config import config
    from mlflow_oidc_auth.middleware import ProxyHeadersMiddleware, WorkspaceContextMiddleware

    proxy_call = ProxyHeadersMiddleware.__call__
    workspace_call = WorkspaceContextMiddleware.__call__

    async def proxy_headers(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if getattr(self, "_trusted_networks", None) == []:  # no proxy trusted: reads nothing
            await self.app(scope, receive, send)
        else:
            await proxy_call(self, scope, receive, send)

    async def workspace_context(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if not config.MLFLOW_ENABLE_WORKSPACES:  # read per request, as its dispatch does
            await self.app(scope, receive, send)
        else:
            await workspace_call(self, scope, receive, send)

    ProxyHeadersMiddleware.__call__ = proxy_headers
    WorkspaceContextMiddleware.__call__ = workspace_context


def _route_flask_paths_first(app: Any) -> None:
    """Put a copy of the Flask mount first that claims a request only when no other route would
    fully match it — exactly when the router would have reached the mount anyway. Worked out
    once per (method, path) and remembered."""
    from mlflow_oidc_auth.middleware import AuthAwareWSGIMiddleware
    from starlette.routing import Host, Match, Mount
    from starlette.types import Scope

    router = app.router
    mounts = [r for r in router.routes
              if isinstance(r, Mount) and isinstance(r.app, AuthAwareWSGIMiddleware)]
    if len(mounts) != 1 or any(isinstance(r, Host) for r in router.routes):
        logger.warning("Unexpected route layout; Flask paths are matched the usual way")
        return
    flask = mounts[0]

    class FlaskFirst(Mount):
        def __init__(self) -> None:
            super().__init__(flask.path, app=flask.app, name=flask.name)
            self._flask_only: dict[tuple[str, str, str], bool] = {}
            self._routes_seen = len(router.routes)
            self._lock = threading.Lock()

        def _no_other_route(self, scope: Scope) -> bool:
            for route in list(router.routes):
                if route is self or route is flask:
                    continue
                if route.matches(scope)[0] == Match.FULL:
                    return False
            return True

        def matches(self, scope: Scope) -> tuple[Match, Scope]:
            if scope["type"] != "http":
                return Match.NONE, {}
            # Everything route matching depends on here (no Host routes: checked above).
            key = (scope["method"], scope.get("root_path", ""), scope["path"])
            with self._lock:
                if len(router.routes) != self._routes_seen or len(self._flask_only) > 10_000:
                    self._flask_only.clear()  # routes changed, or bounded memory
                    self._routes_seen = len(router.routes)
                flask_only = self._flask_only.get(key)
            if flask_only is None:
                flask_only = self._no_other_route(scope)
                with self._lock:
                    self._flask_only[key] = flask_only
            if not flask_only:
                return Match.NONE, {}
            return super().matches(scope)

    router.routes.insert(0, FlaskFirst())


def _validate_hosts(app: Any) -> None:
    """MLflow's DNS-rebinding protection (the Host header check) lives in its Flask app, which
    mlflow-oidc-auth mounts under its own routes: /login, /callback, the permission UI and API
    answered any Host. The same check, with MLflow's own middleware and allowed hosts, now
    guards the whole app (/health stays open for probes)."""
    from mlflow.environment_variables import MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE
    from mlflow.server.fastapi_security import HostValidationMiddleware, get_allowed_hosts

    if MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE.get() == "true":  # type: ignore[no-untyped-call]
        return
    hosts = get_allowed_hosts()
    if hosts and "*" not in hosts:
        app.add_middleware(HostValidationMiddleware, allowed_hosts=hosts)


class CrossSiteWriteBlock:
    """MLflow refuses state-changing requests from other origins in its own app only: a POST to
    mlflow-oidc-auth's permission API with a session cookie and ``Origin: https://evil.example``
    granted a permission. The same rule (MLflow's should_block_cors_request and allowed
    origins) now guards every route (pure ASGI: no per-request task)."""

    def __init__(self, app: Any, allowed_origins: list[str]) -> None:
        from mlflow.server.security_utils import should_block_cors_request

        self.app = app
        self.allowed_origins = allowed_origins
        self.blocks = should_block_cors_request

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            origin = next((v for k, v in scope["headers"] if k == b"origin"), b"")
            if origin and self.blocks(origin.decode("latin-1"), scope["method"],
                                      self.allowed_origins):
                await send_error(send, 403, "PERMISSION_DENIED", "Cross-origin request blocked")
                return
        await self.app(scope, receive, send)


def _block_cross_site_writes(app: Any) -> None:
    from mlflow.environment_variables import MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE
    from mlflow.server.fastapi_security import get_allowed_origins

    if MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE.get() == "true":  # type: ignore[no-untyped-call]
        return
    origins = get_allowed_origins()
    if "*" not in origins:  # MLflow's own rule: a wildcard opts out of server-side blocking
        app.add_middleware(CrossSiteWriteBlock, allowed_origins=origins)


def install() -> None:
    """Apply the patches once (idempotent)."""
    global _PATCHED, logger
    if _PATCHED:
        return
    from mlflow_oidc_auth.logger import get_logger

    logger = get_logger()  # the server's configured log, so our decisions show up beside its own
    _patch_jwks_refresh()
    _patch_bearer_auth()
    _patch_denial_reason()
    identity.patch_login()
    _patch_flask_pool()
    _patch_idle_middleware()
    _PATCHED = True


install()

from mlflow_oidc_auth.app import app  # noqa: E402  (patched modules first, then the app)

# After the app: its import pulls in the validators whose references are replaced, and its
# routes are all in place.
_patch_run_experiment_lookup()
_route_flask_paths_first(app)
_patch_access_tokens(app)
_block_cross_site_writes(app)
_validate_hosts(app)
from mlflow_stack.server import hardening  # noqa: E402

hardening.install(app)  # request bounds, strict Host, artifact paths, listings, auth log
from mlflow_stack.server import surfaces  # noqa: E402

surfaces.install(app)  # assistant, AI gateway, telemetry notice

__all__ = ["app", "install"]
