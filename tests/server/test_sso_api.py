"""The server with SSO, against a real Keycloak: bearer-token RBAC, role changes, forged tokens.

One realm and one server (one worker) for the module; tokens come from Keycloak's password grant.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from harness.keycloak import KeycloakServer, create_client, jwt_claims, password_grant
from harness.ports import free_port
from harness.sso import (
    ADMIN_ROLE,
    USER_ROLE,
    SsoRealm,
    SsoServer,
    audience_mapper,
    provision_realm,
    realm_role_mapper,
    running,
    sso_settings,
)
from harness.waits import wait_until

pytestmark = pytest.mark.integration
REALM = f"sso-api-{uuid.uuid4().hex[:8]}"
API = "/api/2.0/mlflow"


@dataclass
class Env:
    realm: SsoRealm
    server: SsoServer
    other_realm: SsoRealm
    short_secret: str
    other_client_secret: str

    def call(self, token: str | None, method: str, path: str,
             body: dict[str, object] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, f"{self.server.url}{path}", headers=headers, json=body,
                             timeout=30.0)


@pytest.fixture(scope="module")
def env(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    realm = provision_realm(keycloak, REALM, base, users={
        "alice": [ADMIN_ROLE], "bob": [USER_ROLE], "carol": [], "dave": [USER_ROLE],
        "erin": [USER_ROLE], **{name: [USER_ROLE] for name in FIRST_SIGHT[1:]},
        FIRST_SIGHT[0]: [ADMIN_ROLE],
    })
    # Same client id and audience in another realm: only the issuer is wrong.
    other = provision_realm(keycloak, f"{REALM}-other", base, users={"alice": [ADMIN_ROLE]})
    # A client of the same realm whose tokens live 2 s (expired tokens), with the audience.
    short = create_client(keycloak, REALM, "mlflow-short", attributes={
        "access.token.lifespan": "2"}, protocolMappers=[realm_role_mapper(),
                                                         audience_mapper(realm.client_id)])
    # A client of the same realm without the audience mapper (aud: account): wrong audience.
    other_client = create_client(keycloak, REALM, "other-app",
                                 protocolMappers=[realm_role_mapper()])
    assert short is not None and other_client is not None
    settings = sso_settings(realm, port)
    with running(settings, tmp_path_factory.mktemp("sso-api") / "state") as server:
        yield Env(realm, server, other, short, other_client)


FIRST_SIGHT = ("frank", "gina", "hank", "ivy", "jack")  # accounts first seen all at once


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def tampered_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0xFF
    return f"{header}.{payload}.{_b64(bytes(raw))}"


def forged_claims(token: str, **claims: object) -> str:
    """The payload rewritten (e.g. roles added) under the original signature."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    return f"{header}.{_b64(json.dumps(data).encode())}.{signature}"


# --------------------------------------------------------------------------------------------
# RBAC matrix


@pytest.fixture(scope="module")
def tokens(env: Env) -> dict[str, str]:
    kc, realm = env.realm.server, env.realm
    alice = realm.users["alice"]
    short = password_grant(kc, realm.realm, "mlflow-short", alice.username, alice.password,
                           env.short_secret)["access_token"]
    wrong_aud = password_grant(kc, realm.realm, "other-app", alice.username, alice.password,
                               env.other_client_secret)["access_token"]
    o_alice = env.other_realm.users["alice"]
    wrong_iss = password_grant(kc, env.other_realm.realm, env.other_realm.client_id,
                               o_alice.username, o_alice.password,
                               env.other_realm.client_secret)["access_token"]
    result = {
        "admin": env.realm.new_token("alice"), "user": env.realm.new_token("bob"),
        "norole": env.realm.new_token("carol"),
        "tampered": tampered_signature(env.realm.new_token("alice")),
        "wrong_aud": str(wrong_aud), "wrong_iss": str(wrong_iss), "expired": str(short),
        "none": "",
    }
    # Each bad token is bad in exactly one way: right audience and issuer, but 2 s lifetime;
    # right issuer, wrong audience; right audience, wrong issuer.
    claims = jwt_claims(result["expired"])
    assert claims["exp"] - claims["iat"] == 2 and realm.client_id in _aud(claims)
    claims = jwt_claims(result["wrong_aud"])
    assert claims["iss"] == realm.issuer and realm.client_id not in _aud(claims)
    claims = jwt_claims(result["wrong_iss"])
    assert claims["iss"] != realm.issuer and realm.client_id in _aud(claims)
    assert ADMIN_ROLE in claims["realm_access"]["roles"]
    # Poll until the server refuses the 2 s token: at most 5 s after its exp.
    claims = jwt_claims(result["expired"])
    search = f"{API}/experiments/search?max_results=1"
    assert wait_until(lambda: env.call(result["expired"], "GET", search).status_code == 401,
                      timeout=max(0.0, claims["exp"] - time.time()) + 5), \
        "the server still accepts a token 5 s after it expired"
    return result


def _aud(claims: dict[str, object]) -> list[object]:
    aud = claims.get("aud")
    return aud if isinstance(aud, list) else [aud]


@pytest.fixture(scope="module")
def admin_experiment(env: Env, tokens: dict[str, str]) -> str:
    r = env.call(tokens["admin"], "POST", f"{API}/experiments/create",
                 {"name": f"admin-{uuid.uuid4().hex[:6]}"})
    assert r.status_code == 200, r.text
    return str(r.json()["experiment_id"])


OPS: dict[str, Callable[[str], tuple[str, str, dict[str, object] | None]]] = {
    # read
    "search": lambda exp: ("GET", f"{API}/experiments/search?max_results=5", None),
    "get_other": lambda exp: ("GET", f"{API}/experiments/get?experiment_id={exp}", None),
    # write
    "create_own": lambda exp: ("POST", f"{API}/experiments/create",
                               {"name": f"e-{secrets.token_hex(4)}"}),
    "write_other": lambda exp: ("POST", f"{API}/runs/create", {"experiment_id": exp}),
    # admin only
    "list_groups": lambda exp: ("GET", f"{API}/permissions/groups/details", None),
}
DENIED = dict.fromkeys(OPS, 401)
EXPECTED: dict[str, dict[str, int]] = {
    "admin": dict.fromkeys(OPS, 200),
    "user": {"search": 200, "get_other": 200, "create_own": 200, "write_other": 403,
             "list_groups": 403},
    "norole": DENIED, "expired": DENIED, "tampered": DENIED, "wrong_aud": DENIED,
    "wrong_iss": DENIED, "none": DENIED,
}
CASES = [(who, op) for who in EXPECTED for op in OPS]


@pytest.mark.parametrize(("who", "op"), CASES, ids=[f"{w}-{o}" for w, o in CASES])
def test_rbac_matrix(env: Env, tokens: dict[str, str], admin_experiment: str,
                     who: str, op: str) -> None:
    method, path, body = OPS[op](admin_experiment)
    response = env.call(tokens[who] or None, method, path, body)
    assert response.status_code == EXPECTED[who][op], (who, op, response.text[:300])


# --------------------------------------------------------------------------------------------
# role changes in Keycloak take effect with the next token


def test_removed_user_role_is_refused_with_next_token(env: Env) -> None:
    first = env.realm.new_token("dave")
    assert env.call(first, "POST", f"{API}/experiments/create",
                    {"name": f"dave-{secrets.token_hex(4)}"}).status_code == 200
    env.realm.set_roles("dave", [])
    assert env.call(env.realm.new_token("dave"), "GET", f"{API}/experiments/search?max_results=1"
                    ).status_code == 401
    env.realm.set_roles("dave", [USER_ROLE])  # and back again
    assert env.call(env.realm.new_token("dave"), "GET", f"{API}/experiments/search?max_results=1"
                    ).status_code == 200


def test_a_new_user_s_first_requests_all_pass_when_they_arrive_together(env: Env) -> None:
    """The first requests of an account never seen, sent at once on separate connections (a
    client's threads, the UI): one worker provisions the account while the others check its
    roles. Every one of them is answered, none refused while the account is being written
    (before: one 401 "Could not check the token's roles" now and then)."""
    for name in FIRST_SIGHT:
        token = env.realm.new_token(name)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: env.call(
                t, "GET", f"{API}/experiments/search?max_results=1"), [token] * 8))
        codes = [answer.status_code for answer in answers]
        assert codes == [200] * 8, (name, codes, [a.text[:200] for a in answers
                                                  if a.status_code != 200])


def test_granted_admin_role_gives_admin_rights_and_removal_takes_them(env: Env) -> None:
    groups = f"{API}/permissions/groups/details"
    assert env.call(env.realm.new_token("erin"), "GET", groups).status_code == 403
    env.realm.set_roles("erin", [USER_ROLE, ADMIN_ROLE])
    assert env.call(env.realm.new_token("erin"), "GET", groups).status_code == 200
    env.realm.set_roles("erin", [USER_ROLE])
    assert env.call(env.realm.new_token("erin"), "GET", groups).status_code == 403


# --------------------------------------------------------------------------------------------
# forged tokens do not turn into requests to Keycloak


def test_forged_token_flood_is_refused_without_refetching_keys(env: Env) -> None:
    kc = env.realm.server
    certs = rf"^/realms/{REALM}/protocol/openid-connect/certs$"
    discovery = rf"^/realms/{REALM}/\.well-known/openid-configuration$"
    good = env.realm.new_token("bob")
    assert env.call(good, "GET", f"{API}/experiments/search?max_results=1").status_code == 200
    kc.sync_access_log()  # the server's key fetches so far are all counted
    certs_before, disc_before = kc.count_requests(certs), kc.count_requests(discovery)

    def forge(i: int) -> int:
        token = forged_claims(good, jti=f"forged-{i}",
                              realm_access={"roles": [ADMIN_ROLE, USER_ROLE]})
        with httpx.Client(timeout=30.0) as client:
            return client.get(f"{env.server.url}{API}/experiments/search?max_results=1",
                              headers={"Authorization": f"Bearer {token}"}).status_code

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(forge, range(200)))
    assert statuses == [401] * 200
    kc.sync_access_log()
    # Well within a minute: at most one key-set refresh per server worker process.
    workers = env.server.settings.effective_workers
    assert workers > 1  # the default configuration, several processes
    assert kc.count_requests(certs) - certs_before <= workers
    assert kc.count_requests(discovery) - disc_before <= workers
    # The real token still works.
    assert env.call(good, "GET", f"{API}/experiments/search?max_results=1").status_code == 200


def test_every_route_checks_the_host_header(env: Env) -> None:
    """DNS rebinding: a page on another host name must not reach any route, the SSO layer's
    own (login, callback, permission UI and API) included; /health stays open for probes."""
    paths = ["/login", "/callback?code=x&state=y", "/oidc/ui/", f"{API}/users/current",
             f"{API}/experiments/search?max_results=1"]
    for path in paths:
        refused = httpx.get(f"{env.server.url}{path}", headers={"Host": "evil.example"},
                            timeout=30)
        assert refused.status_code == 403, (path, refused.status_code, refused.text[:200])
    assert httpx.get(f"{env.server.url}/health", headers={"Host": "evil.example"},
                     timeout=30).status_code == 200
    login = httpx.get(f"{env.server.url}/login", timeout=30)
    assert login.status_code in (302, 303, 307), "the right host still gets the login"
