"""Keycloak access tokens for MLflow clients: where they come from, and keeping one valid.

Token sources, in this order (``resolve_source``):

1. a stored login (refresh token) written by ``mlflow-stack login``;
2. client credentials (a service account: ``MLFLOW_CLIENT_SECRET`` without
   ``MLFLOW_AUTH_USERNAME``);
3. the reference's password-grant variables: ``MLFLOW_KEYCLOAK_TOKEN_URL``,
   ``MLFLOW_KEYCLOAK_CLIENT_ID``, ``MLFLOW_CLIENT_SECRET``, ``MLFLOW_AUTH_USERNAME``,
   ``MLFLOW_AUTH_PASSWORD``.

``TokenManager`` hands out an access token that is valid for a while yet. Tokens live in the
shared cache file (``token_cache``), so a fleet of training processes asks Keycloak once per token
lifetime, not once each. Shortly before a token expires it is renewed, with the refresh token
first and the original grant only when the refresh token is no longer accepted.

Secrets (passwords, client secrets, tokens) are never logged and never part of a ``repr``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import httpx

from mlflow_stack.client.oidc import (
    DEFAULT_CLIENT_ID,
    DEFAULT_MAX_SKEW,
    ENV_CA_BUNDLE,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_GRANT,
    ENV_MAX_SKEW,
    ENV_PASSWORD,
    ENV_TOKEN_URL,
    ENV_USERNAME,
    TOKEN_PATH_SUFFIX,
    Clock,
    KeycloakClient,
    KeycloakRefused,
    KeycloakUnreachable,
    LoginRequired,
    RefreshRejected,
    TokenConfigError,
    TokenSet,
    new_http_client,
    token_request,
)
from mlflow_stack.client.token_cache import (
    CacheData,
    CacheEntry,
    SourceKind,
    TokenCache,
    cache_key,
    cache_path_from_env,
)

log = logging.getLogger(__name__)

GrantChoice = Literal["auto", "login", "client_credentials", "password"]
# After a failed renewal while the old token is still usable, wait this long before asking again
# (so a Keycloak outage does not turn every MLflow request into a token request).
RETRY_PAUSE = 2.0


# --------------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class TokenSource:
    """Who we are to Keycloak: a stored login, a service account, or a user with a password."""

    kind: SourceKind
    client: KeycloakClient
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # For a stored login: what to use once the login is no longer accepted.
    fallback: TokenSource | None = None

    @property
    def cache_key(self) -> str:
        return cache_key(self.kind, self.client, self.username)

    def describe(self) -> str:
        where = f"client '{self.client.client_id}' at {self.client.token_url}"
        if self.kind == "login":
            return f"stored login (mlflow-stack login) of {where}"
        if self.kind == "client_credentials":
            return f"service account (client credentials) of {where}"
        return f"user '{self.username}' (password grant) via {where}"

    def grant_form(self) -> dict[str, str] | None:
        """The form that gets fresh tokens without a refresh token (None for a login)."""
        if self.kind == "password":
            assert self.username is not None and self.password is not None
            return {"grant_type": "password", "username": self.username,
                    "password": self.password}
        if self.kind == "client_credentials":
            return {"grant_type": "client_credentials"}
        return None


def max_skew_from_env(env: Mapping[str, str] | None = None) -> float:
    env = os.environ if env is None else env
    value = env.get(ENV_MAX_SKEW)
    if not value:
        return DEFAULT_MAX_SKEW
    try:
        return float(value)
    except ValueError:
        raise TokenConfigError(f"{ENV_MAX_SKEW}={value!r} is not a number of seconds") from None


def _missing_credentials_hint() -> str:
    return (f"run `mlflow-stack login`, or set {ENV_TOKEN_URL} and {ENV_CLIENT_ID} with either "
            f"{ENV_USERNAME} + {ENV_PASSWORD} (password grant) or {ENV_CLIENT_SECRET} alone "
            "(service account)")


def resolve_source(env: Mapping[str, str] | None = None,
                   cache: TokenCache | None = None) -> TokenSource:
    """The token source the environment asks for (see the module docstring for the order).

    `MLFLOW_KEYCLOAK_GRANT` (auto | login | client_credentials | password) forces one source.
    """
    env = os.environ if env is None else env
    cache = cache or TokenCache(cache_path_from_env(env))
    choice = (env.get(ENV_GRANT) or "auto").strip().lower().replace("-", "_")
    if choice not in ("auto", "login", "client_credentials", "password"):
        raise TokenConfigError(f"{ENV_GRANT}={choice!r} is not one of auto, login, "
                               "client_credentials, password")
    token_url = (env.get(ENV_TOKEN_URL) or "").strip()
    client_id = (env.get(ENV_CLIENT_ID) or "").strip()
    secret = env.get(ENV_CLIENT_SECRET) or None
    username = env.get(ENV_USERNAME) or None
    password = env.get(ENV_PASSWORD) or None
    ca_bundle = env.get(ENV_CA_BUNDLE) or None

    password_source = cc_source = None
    if token_url:
        client = KeycloakClient(token_url, client_id or DEFAULT_CLIENT_ID, secret, ca_bundle)
        if username or password:
            if not (username and password):
                have, lack = ((ENV_USERNAME, ENV_PASSWORD) if username
                              else (ENV_PASSWORD, ENV_USERNAME))
                raise TokenConfigError(f"{have} is set but {lack} is not",
                                       hint="set both for the password grant, or neither")
            password_source = TokenSource("password", client, username, password)
        if secret:
            cc_source = TokenSource("client_credentials", client)
    # A service account only when no user is named: the reference's code-server environment
    # sets the client secret *and* a user, and means the user.
    env_source = password_source or cc_source

    login = None
    if choice in ("auto", "login"):
        stored = cache.find_login(token_url or None, client_id or None)
        if stored is not None:
            login_client = replace(stored, ca_bundle=ca_bundle or stored.ca_bundle)
            login = TokenSource("login", login_client, fallback=env_source)

    if choice == "login":
        if login is None:
            raise LoginRequired("no stored login" + (f" for {token_url}" if token_url else ""),
                                hint="run `mlflow-stack login`")
        return login
    if choice == "client_credentials":
        if cc_source is None:
            raise TokenConfigError(f"{ENV_GRANT}=client_credentials needs {ENV_TOKEN_URL} and "
                                   f"{ENV_CLIENT_SECRET}")
        return cc_source
    if choice == "password":
        if password_source is None:
            raise TokenConfigError(f"{ENV_GRANT}=password needs {ENV_TOKEN_URL}, "
                                   f"{ENV_USERNAME} and {ENV_PASSWORD}")
        return password_source
    if login is not None:
        return login
    if env_source is not None:
        return env_source
    if not token_url and (username or secret):
        raise TokenConfigError(f"{ENV_TOKEN_URL} is not set",
                               hint=f"set it to https://HOST/realms/REALM{TOKEN_PATH_SUFFIX}")
    raise TokenConfigError("no Keycloak credentials: no stored login and no client or user "
                           "credentials in the environment", hint=_missing_credentials_hint())


# --------------------------------------------------------------------------------------------
# the manager


class TokenManager:
    """A valid access token on demand, shared through the cache with other threads/processes.

    `token()` costs a comparison while the in-memory token is fresh; near expiry one thread
    takes the file lock, adopts a token another process already renewed, or renews it itself.
    """

    def __init__(self, source: TokenSource, cache: TokenCache | None = None, *,
                 clock: Clock = time.time, max_skew: float = DEFAULT_MAX_SKEW,
                 http: httpx.Client | None = None) -> None:
        self.source = source
        self.cache = cache
        self._clock = clock
        self._max_skew = max_skew
        self._lock = threading.Lock()
        self._current: TokenSet | None = None
        self._memory = CacheData()  # used when there is no cache file
        self._http = http
        self._http_pid = os.getpid()
        self._pause_until = 0.0
        self._last_forced = float("-inf")
        # Token-endpoint calls by this manager, per grant type (for tests and statistics).
        self.requests_by_grant: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"TokenManager({self.source!r}, {self.cache!r})"

    # -- public ------------------------------------------------------------------------------

    def token(self) -> str:
        return self.token_set().access_token

    def token_set(self) -> TokenSet:
        current = self._current
        if current is not None and not current.due(self._clock()):
            return current
        with self._lock:
            current = self._current
            now = self._clock()
            if current is not None and not current.due(now):
                return current
            if current is not None and current.usable(now) and now < self._pause_until:
                return current  # a renewal just failed; keep using the old token a moment
            try:
                with self._data() as data:
                    tokens = self._renew(data)
            except (KeycloakUnreachable, KeycloakRefused) as exc:
                if current is not None and current.usable(now) and \
                        not isinstance(exc, RefreshRejected):
                    log.warning("could not renew the Keycloak token (%s); using the current one "
                                "for its last %.0f s", exc.message, current.expires_at - now)
                    self._pause_until = now + RETRY_PAUSE
                    return current
                raise
            self._current = tokens
            return tokens

    def invalidate(self, access_token: str, min_interval: float = 30.0) -> bool:
        """Forget access_token (the server refused it) so the next call renews.

        Returns False, doing nothing, if a renewal was forced less than min_interval ago: a
        server that refuses every token (e.g. the user has no MLflow role) must not turn each
        request into a Keycloak request.
        """
        with self._lock:
            now = self._clock()
            if now - self._last_forced < min_interval:
                return False
            self._last_forced = now
            if self._current is not None and self._current.access_token == access_token:
                self._current = None
            with self._data() as data:
                entry = data.entries.get(self.source.cache_key)
                if entry is not None and entry.tokens.access_token == access_token:
                    entry.tokens.expires_at = entry.tokens.obtained_at  # due now, refresh kept
            return True

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- internals ---------------------------------------------------------------------------

    def _data(self) -> contextlib.AbstractContextManager[CacheData]:
        if self.cache is None:
            return contextlib.nullcontext(self._memory)
        return self.cache.locked()

    def _client(self) -> httpx.Client:
        # A forked child must not share the parent's connections.
        if self._http is None or self._http_pid != os.getpid():
            self._http = new_http_client(self.source.client)
            self._http_pid = os.getpid()
        return self._http

    def _request(self, source: TokenSource, form: Mapping[str, str]) -> TokenSet:
        grant = form.get("grant_type", "?")
        self.requests_by_grant[grant] = self.requests_by_grant.get(grant, 0) + 1
        log.debug("token request (%s) for %s", grant, source.describe())
        return token_request(self._client(), source.client, form, clock=self._clock,
                             max_skew=self._max_skew, username=source.username)

    def _renew(self, data: CacheData) -> TokenSet:
        """Under the lock: a cached token someone else renewed, a refresh, or a new grant."""
        source = self.source
        while True:
            key = source.cache_key
            entry = data.entries.get(key)
            now = self._clock()
            if entry is not None and not entry.tokens.due(now):
                return entry.tokens
            if source.kind == "login" and entry is None:
                if source.fallback is not None:
                    source = self.source = source.fallback
                    continue
                raise LoginRequired(f"not logged in to {source.client.issuer} (the stored "
                                    "login was removed)", hint="run `mlflow-stack login`")
            if entry is not None and entry.tokens.refreshable(now):
                assert entry.tokens.refresh_token is not None
                try:
                    tokens = self._request(source, {"grant_type": "refresh_token",
                                                    "refresh_token": entry.tokens.refresh_token})
                except RefreshRejected as exc:
                    log.info("refresh token refused for %s (%s)", source.describe(), exc.message)
                    if source.kind == "login":
                        del data.entries[key]
                        if data.default_login == key:
                            data.default_login = None
                        if source.fallback is None:
                            raise LoginRequired(
                                f"Keycloak no longer accepts your login to {source.client.issuer}"
                                f" ({exc.reason})",
                                hint="run `mlflow-stack login` again (`--offline` for a login "
                                     "that outlives the Keycloak session)") from exc
                        source = self.source = source.fallback
                        continue
                else:
                    tokens.refresh_token = tokens.refresh_token or entry.tokens.refresh_token
                    tokens.username = tokens.username or entry.tokens.username
                    entry.tokens = tokens
                    return tokens
            form = source.grant_form()
            if form is None:
                raise LoginRequired(f"your login to {source.client.issuer} has expired",
                                    hint="run `mlflow-stack login` again")
            tokens = self._request(source, form)
            data.entries[key] = CacheEntry(source.kind, source.client.token_url,
                                           source.client.client_id, tokens,
                                           source.client.ca_bundle)
            return tokens


def manager_from_env(env: Mapping[str, str] | None = None, *,
                     clock: Clock = time.time) -> TokenManager:
    """A TokenManager for the environment's source, using the environment's cache file."""
    env = os.environ if env is None else env
    cache = TokenCache(cache_path_from_env(env))
    return TokenManager(resolve_source(env, cache), cache, clock=clock,
                        max_skew=max_skew_from_env(env))
