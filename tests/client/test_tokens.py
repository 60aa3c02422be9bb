"""Token sources, caching and renewal: unit tests on a fake clock and a fake token endpoint, a
multi-process test on a shared cache file, and the refusals of the real Keycloak."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
import threading
from pathlib import Path

import httpx
import pytest

from harness.client_site import CI_CLIENT, CLI_CLIENT, ClientSite
from harness.fake_keycloak import (
    TOKEN_URL,
    FakeClock,
    FakeKeycloak,
    fake_jwt,
    process_token,
    serve,
)
from mlflow_stack.client import oidc
from mlflow_stack.client.oidc import (
    ClockSkewError,
    GrantNotAllowed,
    InvalidCredentials,
    KeycloakClient,
    KeycloakRefused,
    KeycloakUnreachable,
    LoginRequired,
    TokenConfigError,
    TokenSet,
    refresh_margin,
)
from mlflow_stack.client.token_cache import TokenCache, remove_login, store_login
from mlflow_stack.client.tokens import (
    TokenManager,
    TokenSource,
    manager_from_env,
    resolve_source,
)

PASSWORD = "alice-pw-1"
SECRET = "client-secret-1"


def client(url: str = TOKEN_URL, client_id: str = "mlflow") -> KeycloakClient:
    return KeycloakClient(url, client_id, SECRET)


def password_source(url: str = TOKEN_URL) -> TokenSource:
    return TokenSource("password", client(url), "alice", PASSWORD)


def manager(fake: FakeKeycloak, cache: TokenCache | None, clock: FakeClock,
            source: TokenSource | None = None) -> TokenManager:
    return TokenManager(source or password_source(), cache, clock=clock, http=fake.http())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeKeycloak:
    return FakeKeycloak(clock=clock)


@pytest.fixture
def cache(tmp_path: Path) -> TokenCache:
    return TokenCache(tmp_path / "state" / "tokens.json")


# --------------------------------------------------------------------------------------------
# renewal


def test_refresh_margin() -> None:
    assert refresh_margin(30) == 3.0  # a 30 s token is used for 27 s
    assert refresh_margin(3600) == 60.0
    assert refresh_margin(5) == 2.0


def test_token_is_reused_until_due_then_refreshed_with_the_refresh_token(
        fake: FakeKeycloak, cache: TokenCache, clock: FakeClock) -> None:
    m = manager(fake, cache, clock)
    first = m.token()
    clock.advance(26.9)
    assert m.token() == first
    assert fake.grants == {"password": 1}
    clock.advance(0.2)  # 27.1 s: inside the 3 s margin
    second = m.token()
    assert second != first
    assert fake.grants == {"password": 1, "refresh_token": 1}
    # Over 10 lifetimes: one request per 27 s, always by refresh token.
    for _ in range(300):
        clock.advance(1.0)
        m.token()
    assert fake.grants["password"] == 1
    assert fake.grants["refresh_token"] == 1 + 300 // 27


def test_rejected_refresh_token_falls_back_to_the_password_grant(
        fake: FakeKeycloak, cache: TokenCache, clock: FakeClock) -> None:
    m = manager(fake, cache, clock)
    m.token()
    entry = cache.read().entries[password_source().cache_key]
    assert entry.tokens.refresh_token is not None
    fake.revoked.add(entry.tokens.refresh_token)  # e.g. the SSO session ended
    clock.advance(28)
    m.token()
    assert fake.grants == {"password": 2, "refresh_token": 1}


def test_expired_refresh_token_is_not_sent(fake: FakeKeycloak, cache: TokenCache,
                                           clock: FakeClock) -> None:
    fake.refresh_lifespan = 40
    m = manager(fake, cache, clock)
    m.token()
    clock.advance(60)
    m.token()
    assert fake.grants == {"password": 2}


def test_stored_login_is_refreshed_and_ends_with_login_required(
        fake: FakeKeycloak, cache: TokenCache, clock: FakeClock) -> None:
    login_client = KeycloakClient(TOKEN_URL, "mlflow-cli", SECRET)
    _, body = fake.answer({"grant_type": "password", "username": "alice",
                                "password": PASSWORD, "client_secret": SECRET})
    store_login(cache, login_client, oidc.tokens_from_body(body, clock(), clock=clock,
                                                          max_skew=120))
    source = resolve_source({}, cache)
    assert source.kind == "login" and source.client.client_id == "mlflow-cli"
    assert source.client.client_secret == SECRET  # kept for a confidential login client
    m = manager(fake, cache, clock, source)
    m.token()
    assert fake.grants == {"password": 1}  # the login's own token, no new request
    clock.advance(28)
    m.token()
    assert fake.grants == {"password": 1, "refresh_token": 1}
    refresh = cache.read().entries[source.cache_key].tokens.refresh_token
    assert refresh is not None
    fake.revoked.add(refresh)
    clock.advance(28)
    with pytest.raises(LoginRequired, match="no longer accepts your login") as info:
        m.token()
    assert "mlflow-stack login" in str(info.value)
    assert source.cache_key not in cache.read().entries  # the dead login is forgotten


def test_stored_login_falls_back_to_environment_credentials(
        fake: FakeKeycloak, cache: TokenCache, clock: FakeClock) -> None:
    store_login(cache, client(), TokenSet("tok", clock() + 30, clock(), "refresh-alice-x",
                                          None, "alice"))
    env = {oidc.ENV_TOKEN_URL: TOKEN_URL, oidc.ENV_CLIENT_ID: "mlflow",
           oidc.ENV_CLIENT_SECRET: SECRET, oidc.ENV_USERNAME: "alice",
           oidc.ENV_PASSWORD: PASSWORD}
    source = resolve_source(env, cache)
    assert source.kind == "login" and source.fallback is not None
    fake.revoked.add("refresh-alice-x")
    clock.advance(28)
    m = manager(fake, cache, clock, source)
    m.token()
    assert fake.grants == {"refresh_token": 1, "password": 1}
    assert m.source.kind == "password"


def test_managers_sharing_a_cache_file_ask_keycloak_once_per_lifetime(
        fake: FakeKeycloak, cache: TokenCache, clock: FakeClock) -> None:
    # Two managers on one file behave like two processes.
    one, two = manager(fake, cache, clock), manager(fake, TokenCache(cache.path), clock)
    assert one.token() == two.token()
    assert fake.grants == {"password": 1}
    clock.advance(27.5)
    renewed = one.token()
    assert two.token() == renewed  # adopted from the file, not asked for again
    assert fake.grants == {"password": 1, "refresh_token": 1}


def test_threads_share_one_renewal(cache: TokenCache) -> None:
    fake = FakeKeycloak(delay=0.3)
    m = TokenManager(password_source(), cache, http=fake.http())
    results: list[str] = []
    barrier = threading.Barrier(16)

    def work() -> None:
        barrier.wait()
        results.append(m.token())

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 16
    assert fake.grants == {"password": 1}


def test_processes_share_one_token_through_the_locked_file(tmp_path: Path) -> None:
    fake = FakeKeycloak(delay=0.5)  # long enough for every process to be waiting on the lock
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[str] = context.Queue()
    with serve(fake) as url:
        procs = [context.Process(target=process_token,
                                 args=(url, str(tmp_path / "tokens.json"), queue))
                 for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
    tokens = {queue.get(timeout=5) for _ in procs}
    assert len(tokens) == 1
    assert fake.grants == {"password": 1}


def test_unreachable_keycloak_keeps_the_current_token_while_it_lasts(
        fake: FakeKeycloak, cache: TokenCache, clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    m = manager(fake, cache, clock)
    first = m.token()
    fake.down = True
    clock.advance(28)  # due, 2 s left
    with caplog.at_level(logging.WARNING):
        assert m.token() == first
    assert "could not renew" in caplog.text
    assert m.token() == first  # paused: no second attempt right away
    clock.advance(2.5)  # expired
    with pytest.raises(KeycloakUnreachable, match="cannot reach Keycloak"):
        m.token()


def test_invalidate_is_rate_limited(fake: FakeKeycloak, cache: TokenCache,
                                    clock: FakeClock) -> None:
    m = manager(fake, cache, clock)
    first = m.token()
    assert m.invalidate(first)
    second = m.token()
    assert second != first and fake.grants == {"password": 1, "refresh_token": 1}
    assert not m.invalidate(second)  # a server refusing every token: no request storm
    assert m.token() == second
    clock.advance(31)
    assert m.invalidate(m.token())


# --------------------------------------------------------------------------------------------
# clock skew


@pytest.mark.parametrize(("offset", "word"), [(600, "ahead of"), (-600, "behind")])
def test_clock_skew_is_an_error(fake: FakeKeycloak, clock: FakeClock, offset: float,
                                word: str) -> None:
    local = FakeClock(clock.now + offset)  # Keycloak's clock is `clock`
    m = TokenManager(password_source(), None, clock=local, http=fake.http())
    with pytest.raises(ClockSkewError, match=f"600 s {word} Keycloak's") as info:
        m.token()
    assert "timedatectl" in str(info.value)


def test_small_skew_is_fine_and_the_check_can_be_disabled(fake: FakeKeycloak,
                                                          clock: FakeClock) -> None:
    TokenManager(password_source(), None, clock=FakeClock(clock.now + 60),
                 http=fake.http()).token()
    TokenManager(password_source(), None, clock=FakeClock(clock.now + 6000), max_skew=0,
                 http=fake.http()).token()


# --------------------------------------------------------------------------------------------
# cache file


def test_cache_file_is_private(fake: FakeKeycloak, cache: TokenCache, clock: FakeClock) -> None:
    manager(fake, cache, clock).token()
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.lock_path.stat().st_mode) == 0o600
    os.chmod(cache.path, 0o644)  # loosened by someone
    cache.read()
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the file away")
def test_cache_file_of_another_user_is_refused(fake: FakeKeycloak, cache: TokenCache,
                                               clock: FakeClock) -> None:
    manager(fake, cache, clock).token()
    os.chown(cache.path, 12345, 12345)
    with pytest.raises(TokenConfigError, match="belongs to another user"):
        cache.read()


def test_corrupt_cache_is_replaced(fake: FakeKeycloak, cache: TokenCache,
                                   clock: FakeClock) -> None:
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text("{not json")
    manager(fake, cache, clock).token()
    assert json.loads(cache.path.read_text())["version"] == 1


def test_logins_are_stored_found_and_removed(cache: TokenCache, clock: FakeClock) -> None:
    a = KeycloakClient(TOKEN_URL, "mlflow-cli")
    b = KeycloakClient(TOKEN_URL.replace("/r/", "/other/"), "mlflow-cli")
    tokens = TokenSet("t", clock() + 30, clock(), "refresh-alice-1")
    store_login(cache, a, tokens)
    store_login(cache, b, tokens)
    assert cache.find_login() == b  # the most recent
    assert cache.find_login(TOKEN_URL) == a
    assert cache.find_login(TOKEN_URL, "other-client") == a  # same Keycloak, any client
    assert remove_login(cache, b) is not None
    assert cache.find_login() == a
    assert remove_login(cache, b) is None


# --------------------------------------------------------------------------------------------
# sources


def test_source_order_and_choice(cache: TokenCache, clock: FakeClock) -> None:
    env = {oidc.ENV_TOKEN_URL: TOKEN_URL, oidc.ENV_CLIENT_ID: "mlflow",
           oidc.ENV_CLIENT_SECRET: SECRET}
    # Client secret alone: a service account.
    assert resolve_source(env, cache).kind == "client_credentials"
    # With a user too (the reference's code-server environment): the user.
    user_env = {**env, oidc.ENV_USERNAME: "alice", oidc.ENV_PASSWORD: PASSWORD}
    assert resolve_source(user_env, cache).kind == "password"
    assert resolve_source({**user_env, oidc.ENV_GRANT: "client_credentials"},
                          cache).kind == "client_credentials"
    # A stored login comes first.
    store_login(cache, KeycloakClient(TOKEN_URL, "mlflow-cli"),
                TokenSet("t", clock() + 30, clock(), "refresh-alice-1"))
    assert resolve_source(user_env, cache).kind == "login"
    assert resolve_source({}, cache).kind == "login"
    assert resolve_source({**user_env, oidc.ENV_GRANT: "password"}, cache).kind == "password"


@pytest.mark.parametrize(("env", "message"), [
    ({}, "no Keycloak credentials"),
    ({oidc.ENV_USERNAME: "alice"}, "MLFLOW_KEYCLOAK_TOKEN_URL is not set"),
    ({oidc.ENV_TOKEN_URL: TOKEN_URL, oidc.ENV_USERNAME: "alice"},
     "MLFLOW_AUTH_USERNAME is set but MLFLOW_AUTH_PASSWORD is not"),
    ({oidc.ENV_TOKEN_URL: "keycloak.example.test/token"}, "is not an http"),
    ({oidc.ENV_TOKEN_URL: TOKEN_URL, oidc.ENV_GRANT: "magic"}, "is not one of"),
    ({oidc.ENV_TOKEN_URL: TOKEN_URL, oidc.ENV_CLIENT_SECRET: "s",
      oidc.ENV_CA_BUNDLE: "/nonexistent/ca.pem"}, "CA bundle /nonexistent/ca.pem does not"),
])
def test_source_errors(cache: TokenCache, env: dict[str, str], message: str) -> None:
    with pytest.raises(TokenConfigError, match=message) as info:
        resolve_source(env, cache)
    assert info.value.exit_code == 2


def test_login_grant_without_login(cache: TokenCache) -> None:
    with pytest.raises(LoginRequired, match="no stored login"):
        resolve_source({oidc.ENV_GRANT: "login"}, cache)


# --------------------------------------------------------------------------------------------
# refusals, as Keycloak 26 words them


def respond(status: int, body: object = None, **headers: str) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, dict):
            return httpx.Response(status, json=body, headers=headers)
        return httpx.Response(status, text=str(body or ""), headers=headers)

    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("status", "body", "grant", "error", "words"), [
    (400, {"error": "invalid_grant", "error_description": "Invalid user credentials"},
     "password", InvalidCredentials, ["password of user 'alice'", "MLFLOW_AUTH_PASSWORD"]),
    (401, {"error": "unauthorized_client",
           "error_description": "Invalid client or Invalid client credentials"},
     "password", InvalidCredentials, ["refused client 'mlflow'", "MLFLOW_CLIENT_SECRET"]),
    (401, {"error": "invalid_client",
           "error_description": "Invalid client or Invalid client credentials"},
     "client_credentials", InvalidCredentials, ["MLFLOW_KEYCLOAK_CLIENT_ID"]),
    (400, {"error": "unauthorized_client",
           "error_description": "Client not allowed for direct access grants"},
     "password", GrantNotAllowed, ["does not allow the password grant", "Direct access grants"]),
    (401, {"error": "unauthorized_client",
           "error_description": "Client not enabled to retrieve service account"},
     "client_credentials", GrantNotAllowed, ["Service accounts roles"]),
    (404, {"error": "Realm does not exist"}, "password", TokenConfigError,
     ["Realm does not exist", "MLFLOW_KEYCLOAK_TOKEN_URL"]),
    (503, "<html>busy</html>", "password", KeycloakUnreachable, ["HTTP 503"]),
    (200, "<html>login</html>", "password", KeycloakRefused, ["did not answer like"]),
])
def test_refusals_become_actionable_errors(status: int, body: object, grant: str,
                                           error: type[Exception], words: list[str]) -> None:
    form = {"grant_type": grant, "username": "alice", "password": "x"}
    with pytest.raises(error) as info:
        oidc.token_request(respond(status, body), client(), form, clock=FakeClock(),
                           max_skew=120, username="alice")
    for word in words:
        assert word in str(info.value)


def test_redirect_is_not_followed() -> None:
    with pytest.raises(TokenConfigError, match=r"redirects to https://sso\.example\.test/login"):
        oidc.token_request(respond(302, "", location="https://sso.example.test/login"),
                           client(), {"grant_type": "password"}, clock=FakeClock(),
                           max_skew=120)


def test_untrusted_certificate_names_the_ca_bundle_variable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
                                 request=request)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(KeycloakUnreachable, match="not trusted") as info:
        oidc.token_request(http, client(), {"grant_type": "password"}, clock=FakeClock(),
                           max_skew=120)
    assert "MLFLOW_CA_BUNDLE" in str(info.value)


# --------------------------------------------------------------------------------------------
# secrets stay secret


def test_secrets_are_never_logged_or_shown(fake: FakeKeycloak, cache: TokenCache,
                                           clock: FakeClock,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    m = manager(fake, cache, clock)
    m.token()
    clock.advance(28)
    m.token()
    tokens = cache.read().entries[password_source().cache_key].tokens
    bad = TokenManager(TokenSource("password", client(), "alice", "not-the-password"), None,
                       clock=clock, http=fake.http())
    with pytest.raises(InvalidCredentials) as info:
        bad.token()
    shown = " ".join([caplog.text, repr(m), repr(m.source), repr(tokens), str(info.value),
                      repr(cache.read().entries), repr(bad)])
    for secret in (PASSWORD, SECRET, "not-the-password", tokens.access_token,
                   str(tokens.refresh_token)):
        assert secret not in shown


# --------------------------------------------------------------------------------------------
# the real Keycloak


def real_env(site: ClientSite, cache: Path, **overrides: str) -> dict[str, str]:
    env = {oidc.ENV_TOKEN_URL: site.token_url, oidc.ENV_CLIENT_ID: site.realm.client_id,
           oidc.ENV_CLIENT_SECRET: site.realm.client_secret, oidc.ENV_USERNAME: "bob",
           oidc.ENV_PASSWORD: site.realm.users["bob"].password,
           oidc.ENV_CACHE: str(cache)}
    env.update(overrides)
    return {k: v for k, v in env.items() if v}


@pytest.mark.integration
def test_real_keycloak_tokens_and_refusals(client_site: ClientSite, tmp_path: Path) -> None:
    cache = tmp_path / "tokens.json"
    m = manager_from_env(real_env(client_site, cache))
    tokens = m.token_set()
    assert tokens.username == "bob" and tokens.refresh_token
    assert 29 <= tokens.expires_at - tokens.obtained_at <= 30  # the client's 30 s lifespan
    cases: list[tuple[dict[str, str], type[Exception], str]] = [
        ({oidc.ENV_PASSWORD: "not-it"}, InvalidCredentials, "Invalid user credentials"),
        ({oidc.ENV_CLIENT_SECRET: "not-it"}, InvalidCredentials, "Invalid client"),
        ({oidc.ENV_CLIENT_ID: CLI_CLIENT, oidc.ENV_CLIENT_SECRET: ""}, GrantNotAllowed,
         "direct access grants"),
        ({oidc.ENV_USERNAME: "", oidc.ENV_PASSWORD: ""}, GrantNotAllowed,
         "service account"),
        ({oidc.ENV_TOKEN_URL: site_url(client_site, "no-such-realm")}, TokenConfigError,
         "Realm does not exist"),
    ]
    for overrides, error, words in cases:
        env = real_env(client_site, tmp_path / f"{len(overrides)}-{error.__name__}.json",
                       **overrides)
        with pytest.raises(error, match=words):
            manager_from_env(env).token()
    # A service account of another client works with the secret alone.
    cc = manager_from_env(real_env(client_site, tmp_path / "cc.json", **{
        oidc.ENV_CLIENT_ID: CI_CLIENT, oidc.ENV_CLIENT_SECRET: client_site.ci_secret,
        oidc.ENV_USERNAME: "", oidc.ENV_PASSWORD: ""}))
    assert cc.source.kind == "client_credentials"
    assert cc.token_set().username == f"service-account-{CI_CLIENT}"


def site_url(site: ClientSite, realm: str) -> str:
    return f"{site.keycloak.url}/realms/{realm}/protocol/openid-connect/token"


@pytest.mark.integration
def test_real_keycloak_clock_skew(client_site: ClientSite, tmp_path: Path) -> None:
    import time

    env = real_env(client_site, tmp_path / "tokens.json")
    with pytest.raises(ClockSkewError, match="s ahead of Keycloak's"):
        manager_from_env(env, clock=lambda: time.time() + 900).token()


def test_fake_jwt_claims_are_readable() -> None:
    assert oidc.unverified_claims(fake_jwt({"iat": 5}))["iat"] == 5
    assert oidc.unverified_claims("opaque") == {}
