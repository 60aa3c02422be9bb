"""Attacks on identity and revocation against a real Keycloak and real SSO servers (issue 11).

What an attacker of the whole platform broke before: a self-set email took over a deleted
user's account, an ID token passed as an API token, and mlflow-oidc-auth's own long-lived
access tokens outlived every change Keycloak made. The realm is provisioned by the real
Keycloak component (`apply`), as a user gets it; two servers run on it: the default one (access
tokens off) and one with `auth.access_tokens: true` and a 2 s revocation bound.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from keycloak import KeycloakAdmin, KeycloakOpenID
from pydantic import SecretStr

from harness.keycloak import (
    KeycloakServer,
    admin_client,
    create_realm,
    create_user,
    jwt_claims,
)
from harness.ports import free_port
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoServer, running
from mlflow_stack.components import keycloak as kc
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import apply_system, plan_system
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"
REVOCATION_SECONDS = 2


@dataclass
class User:
    name: str
    password: str
    email: str
    id: str


@dataclass
class Env:
    keycloak: KeycloakServer
    realm: str
    client_secret: str
    default: SsoServer  # access tokens off
    tokens_on: SsoServer  # access tokens on, revocation bound REVOCATION_SECONDS
    users: dict[str, User] = field(default_factory=dict)

    @property
    def provisioning(self) -> Settings:
        """The config that provisioned the realm (its redirect URIs name the tokens-on server:
        re-applying another one would break browser logins there)."""
        return self.tokens_on.settings.model_copy(update={"secrets": Secrets.model_construct(
            keycloak_admin_password=SecretStr(self.keycloak.admin_password))})

    @property
    def admin(self) -> KeycloakAdmin:
        return admin_client(self.keycloak, self.realm)

    def add_user(self, name: str, roles: list[str]) -> User:
        password = secrets.token_urlsafe(12)
        email = f"{name}-{uuid.uuid4().hex[:6]}@example.test"
        user_id = create_user(self.keycloak, self.realm, name, password, email)
        self.set_roles(user_id, roles)
        user = User(name, password, email, user_id)
        self.users[name] = user
        return user

    def set_roles(self, user_id: str, roles: list[str]) -> None:
        admin = self.admin
        have = {r["name"] for r in admin.get_realm_roles_of_user(user_id)}
        mlflow_roles = {ADMIN_ROLE, USER_ROLE}
        remove = [admin.get_realm_role(n) for n in (have & mlflow_roles) - set(roles)]
        add = [admin.get_realm_role(n) for n in set(roles) - have]
        if remove:
            admin.delete_realm_roles_of_user(user_id, remove)
        if add:
            admin.assign_realm_roles(user_id, add)

    def grant(self, user: User, scope: str = "openid email profile") -> dict[str, Any]:
        openid = KeycloakOpenID(server_url=self.keycloak.url, realm_name=self.realm,
                                client_id="mlflow", client_secret_key=self.client_secret)
        response: dict[str, Any] = openid.token(user.name, user.password, scope=scope)
        return response

    def token(self, user: User) -> str:
        return str(self.grant(user)["access_token"])


def call(server: SsoServer, method: str, path: str, *, token: str | None = None,
         basic: tuple[str, str] | None = None, body: dict[str, object] | None = None,
         ) -> httpx.Response:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if basic:
        raw = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {raw}"
    return httpx.request(method, f"{server.url}{path}", headers=headers, json=body, timeout=30)


def settings_for(keycloak: KeycloakServer, realm: str, port: int, **auth: Any) -> Settings:
    settings = Settings.model_validate({
        "server": {"port": port},
        "auth": {"provider": "keycloak", "keycloak_url": keycloak.url, "realm": realm,
                 "admin_username": keycloak.admin_user, **auth},
    })
    return settings.model_copy(update={"secrets": Secrets.model_construct(
        keycloak_admin_password=SecretStr(keycloak.admin_password))})


@pytest.fixture(scope="module")
def env(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    realm = f"attack-id-{uuid.uuid4().hex[:8]}"
    create_realm(keycloak, realm)
    default_port, tokens_port = free_port(), free_port()
    default = settings_for(keycloak, realm, default_port)
    tokens_on = settings_for(keycloak, realm, tokens_port, access_tokens=True,
                             revocation_seconds=REVOCATION_SECONDS)
    # The tokens-on config provisions the realm (service account, user profile lock) ...
    apply_system(kc.SYSTEM, tokens_on, NullProgress())
    secret = kc.client_secret(tokens_on)
    # ... and both servers use the one client (redirect URIs are the default server's; the
    # bearer path does not use them).
    base: Path = tmp_path_factory.mktemp("attack-id")
    with_secret = {"secrets": Secrets.model_construct(oidc_client_secret=secret)}
    with ExitStack() as stack:
        servers = [stack.enter_context(running(s.model_copy(update=with_secret), base / name))
                   for s, name in ((default, "default"), (tokens_on, "tokens"))]
        yield Env(keycloak, realm, secret.get_secret_value(), servers[0], servers[1])


# --------------------------------------------------------------------------------------------
# identity: bound to the subject, verified email only


def self_set_email(env: Env, user: User, new_email: str) -> httpx.Response:
    """What a user does in Keycloak's account console: change their own email."""
    token = env.token(user)
    url = f"{env.keycloak.url}/realms/{env.realm}/account"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    me = httpx.get(url, headers=headers, timeout=30).json()
    return httpx.post(url, headers=headers, json={**me, "email": new_email}, timeout=30)


def test_self_set_email_does_not_take_over_a_deleted_users_account(env: Env) -> None:
    victim = env.add_user("victim", [USER_ROLE])
    attacker = env.add_user("mallory", [USER_ROLE])
    made = call(env.default, "POST", f"{API}/experiments/create", token=env.token(victim),
                body={"name": f"victim-{secrets.token_hex(4)}"})
    assert made.status_code == 200, made.text
    experiment = made.json()["experiment_id"]
    env.admin.delete_user(victim.id)  # the MLflow account and its MANAGE grant remain

    # A realm that lets users edit their email (what apply's lock prevents; shown below).
    profile = env.admin.get_realm_users_profile()
    for attribute in profile["attributes"]:
        if attribute["name"] == "email":
            attribute["permissions"]["edit"] = ["admin", "user"]
    env.admin.update_realm_users_profile(profile)
    try:
        assert self_set_email(env, attacker, victim.email).status_code == 204
        stolen = env.token(attacker)
        assert jwt_claims(stolen)["email"] == victim.email
        assert jwt_claims(stolen)["email_verified"] is False
        refused = call(env.default, "POST", f"{API}/experiments/delete", token=stolen,
                       body={"experiment_id": experiment})
        assert refused.status_code == 401
        assert "not verified" in refused.json()["reason"]

        # Even an administrator verifying the address does not hand the account over: it is
        # bound to the victim's subject.
        env.admin.update_user(attacker.id, {"emailVerified": True})
        verified = env.token(attacker)
        assert jwt_claims(verified)["email_verified"] is True
        refused = call(env.default, "POST", f"{API}/experiments/delete", token=verified,
                       body={"experiment_id": experiment})
        assert refused.status_code == 401
        assert "belongs to another Keycloak user" in refused.json()["reason"]
    finally:
        apply_system(kc.SYSTEM, env.provisioning, NullProgress())
    got = call(env.default, "GET", f"{API}/experiments/get?experiment_id={experiment}",
               token=env.token(env.add_user("witness", [ADMIN_ROLE])))
    assert got.json()["experiment"]["lifecycle_stage"] == "active"


def test_apply_locks_the_email_against_self_service(env: Env) -> None:
    user = env.add_user("selfservice", [USER_ROLE])
    changes = plan_system(kc.SYSTEM, env.provisioning)
    locked = {c.target: c for c in changes}["realm user profile attribute email"]
    assert locked.action == "unchanged"
    refused = self_set_email(env, user, f"someone-else-{uuid.uuid4().hex[:6]}@example.test")
    assert refused.status_code == 400, refused.text
    assert env.admin.get_user(user.id)["email"] == user.email
    # Drift (someone re-opened it) is shown by plan and repaired by apply.
    profile = env.admin.get_realm_users_profile()
    for attribute in profile["attributes"]:
        if attribute["name"] == "email":
            attribute["permissions"]["edit"] = ["admin", "user"]
    env.admin.update_realm_users_profile(profile)
    drift = {c.target: c for c in plan_system(kc.SYSTEM, env.provisioning)}
    assert drift["realm user profile attribute email"].action == "update"
    apply_system(kc.SYSTEM, env.provisioning, NullProgress())
    assert self_set_email(env, user, "x@example.test").status_code == 400


def test_changed_email_of_the_same_subject_is_refused(env: Env) -> None:
    user = env.add_user("renamed", [USER_ROLE])
    assert call(env.default, "GET", f"{API}/experiments/search?max_results=1",
                token=env.token(user)).status_code == 200
    env.admin.update_user(user.id, {"email": f"new-{user.email}", "emailVerified": True})
    refused = call(env.default, "GET", f"{API}/experiments/search?max_results=1",
                   token=env.token(user))
    assert refused.status_code == 401
    assert "changed since it was first used" in refused.json()["reason"]


def test_unverified_email_never_creates_an_account(env: Env) -> None:
    user = env.add_user("unverified", [USER_ROLE])
    env.admin.update_user(user.id, {"emailVerified": False})
    refused = call(env.default, "GET", f"{API}/experiments/search?max_results=1",
                   token=env.token(user))
    assert refused.status_code == 401 and "not verified" in refused.json()["reason"]
    admin = env.add_user("lister", [ADMIN_ROLE])
    users = call(env.default, "GET", f"{API}/users", token=env.token(admin))
    assert users.status_code == 200
    assert user.email not in users.text


def test_an_id_token_is_not_an_api_token(env: Env) -> None:
    user = env.add_user("idtoken", [USER_ROLE])
    response = env.grant(user)
    id_token = str(response["id_token"])
    claims = jwt_claims(id_token)
    assert claims["typ"] == "ID" and claims["aud"] == "mlflow"  # signed, ours, right audience
    requests: list[tuple[str, str, dict[str, object] | None]] = [
        ("GET", f"{API}/experiments/search?max_results=1", None),
        ("POST", f"{API}/experiments/create", {"name": "id-token"}),
        ("GET", f"{API}/users/current", None)]
    for method, path, body in requests:
        refused = call(env.default, method, path, token=id_token, body=body)
        assert refused.status_code == 401, (path, refused.text)
    assert "not an access token" in refused.json()["reason"]
    assert call(env.default, "GET", f"{API}/experiments/search?max_results=1",
                token=str(response["access_token"])).status_code == 200


# --------------------------------------------------------------------------------------------
# long-lived access tokens: off by default, else every use checked against Keycloak


def mint(server: SsoServer, bearer: str) -> httpx.Response:
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    return call(server, "POST", f"{API}/users/current/tokens", token=bearer,
                body={"name": f"t-{secrets.token_hex(3)}", "expiration": expires})


def test_access_tokens_are_off_by_default(env: Env) -> None:
    user = env.add_user("notokens", [USER_ROLE])
    bearer = env.token(user)
    refused = mint(env.default, bearer)
    assert refused.status_code == 403 and "auth.access_tokens" in refused.json()["message"]
    patch = call(env.default, "PATCH", f"{API}/users/access-token", token=bearer, body={})
    assert patch.status_code == 403
    # A token minted where they are on is refused here too: Basic is off.
    token = mint(env.tokens_on, env.token(user)).json()["token"]
    basic = call(env.default, "GET", f"{API}/experiments/search?max_results=1",
                 basic=(user.email, token))
    assert basic.status_code == 401 and "auth.access_tokens" in basic.json()["message"]
    assert call(env.tokens_on, "GET", f"{API}/experiments/search?max_results=1",
                basic=(user.email, token)).status_code == 200


def _status(env: Env, user: User, token: str, path: str) -> Callable[[], int]:
    return lambda: call(env.tokens_on, "GET", path, basic=(user.email, token)).status_code


def after_the_bound(status: Callable[[], int], changed_at: float) -> set[int]:
    """What every worker answers once the documented bound has passed since the change: each
    server process keeps Keycloak's answer up to REVOCATION_SECONDS, so one early refusal from
    one worker says nothing about the others. (The wait is the behaviour under test.)"""
    time.sleep(max(0.0, changed_at + REVOCATION_SECONDS + 1.0 - time.monotonic()))
    return {status() for _ in range(24)}  # 4 workers: every one of them is asked


def test_minted_token_follows_role_removal_and_regrant(env: Env) -> None:
    user = env.add_user("minter", [USER_ROLE])
    minted = mint(env.tokens_on, env.token(user))
    assert minted.status_code == 201, minted.text
    status = _status(env, user, minted.json()["token"],
                     f"{API}/experiments/search?max_results=1")
    assert status() == 200
    changed = time.monotonic()
    env.set_roles(user.id, [])
    assert after_the_bound(status, changed) == {401}, "role removal did not reach the token"
    changed = time.monotonic()
    env.set_roles(user.id, [USER_ROLE])
    assert after_the_bound(status, changed) == {200}, "re-grant did not reach the token"


def test_minted_token_dies_with_a_disabled_or_deleted_account(env: Env) -> None:
    user = env.add_user("disabled", [USER_ROLE])
    token = mint(env.tokens_on, env.token(user)).json()["token"]
    status = _status(env, user, token, f"{API}/experiments/search?max_results=1")
    assert status() == 200
    changed = time.monotonic()
    env.admin.update_user(user.id, {"enabled": False})
    assert after_the_bound(status, changed) == {401}
    refused = call(env.tokens_on, "GET", f"{API}/experiments/search?max_results=1",
                   basic=(user.email, token))
    assert "disabled" in refused.json()["reason"]
    changed = time.monotonic()
    env.admin.delete_user(user.id)
    assert after_the_bound(status, changed) == {401}
    refused = call(env.tokens_on, "GET", f"{API}/experiments/search?max_results=1",
                   basic=(user.email, token))
    assert "no longer exists" in refused.json()["reason"]


def test_demoted_admin_loses_admin_routes_without_a_new_bearer_token(env: Env) -> None:
    boss = env.add_user("boss", [USER_ROLE, ADMIN_ROLE])
    keeper = env.add_user("keeper", [USER_ROLE, ADMIN_ROLE])
    # Another admin signs in first: MLflow refuses to demote its last administrator.
    assert call(env.tokens_on, "GET", f"{API}/users/current",
                token=env.token(keeper)).status_code == 200
    token = mint(env.tokens_on, env.token(boss)).json()["token"]
    admin_route = _status(env, boss, token, f"{API}/permissions/groups/details")
    assert admin_route() == 200
    changed = time.monotonic()
    env.set_roles(boss.id, [USER_ROLE])
    # Only the minted token is used from here on: no new Keycloak token reaches the server.
    assert after_the_bound(admin_route, changed) == {403}, \
        "demotion did not reach the admin routes"
    assert _status(env, boss, token, f"{API}/experiments/search?max_results=1")() == 200
    changed = time.monotonic()
    env.set_roles(boss.id, [USER_ROLE, ADMIN_ROLE])
    assert after_the_bound(admin_route, changed) == {200}


def test_demoting_the_last_admin_refuses_the_token_instead_of_keeping_admin(env: Env) -> None:
    """MLflow keeps one active administrator; when Keycloak demotes the last one, their token
    is refused (fail closed) rather than left with admin rights."""
    port = free_port()
    settings = settings_for(env.keycloak, env.realm, port).model_copy(update={
        "secrets": Secrets.model_construct(oidc_client_secret=SecretStr(env.client_secret))})
    only = env.add_user("onlyadmin", [USER_ROLE, ADMIN_ROLE])
    with running(settings, Path(env.tokens_on.state.root).parent / "last-admin") as server:
        groups = f"{API}/permissions/groups/details"
        assert call(server, "GET", groups, token=env.token(only)).status_code == 200
        env.set_roles(only.id, [USER_ROLE])
        refused = call(server, "GET", groups, token=env.token(only))
        assert refused.status_code == 401
        assert "last administrator" in refused.json()["reason"]



def test_browser_login_cannot_take_over_a_bound_account(env: Env, chromium: Any) -> None:
    """The same takeover through Keycloak's login page: refused before a session opens."""
    victim = env.add_user("victim2", [USER_ROLE])
    server = env.tokens_on  # the realm's redirect URIs name this server
    assert call(server, "GET", f"{API}/users/current",
                token=env.token(victim)).status_code == 200  # bound to the victim's subject
    env.admin.delete_user(victim.id)
    hijacker = env.add_user("hijacker", [USER_ROLE])
    env.admin.update_user(hijacker.id, {"email": victim.email, "emailVerified": True})
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}/")
        page.wait_for_url(f"{env.keycloak.url}/realms/{env.realm}/**", timeout=30_000)
        page.fill("#username", hijacker.name)
        page.fill("#password", hijacker.password)
        page.click("#kc-login")
        page.wait_for_selector("text=/another Keycloak user/", timeout=30_000)
        api = page.request.get(f"{server.url}{API}/experiments/search?max_results=1")
        assert api.status == 401
    finally:
        context.close()


def test_cross_site_writes_are_refused_on_the_sso_layers_own_routes(env: Env) -> None:
    """MLflow blocks other origins' writes in its own app only; a permission grant through
    mlflow-oidc-auth's API from another origin went through."""
    owner, other = env.add_user("xsowner", [USER_ROLE]), env.add_user("xsother", [USER_ROLE])
    token = env.token(owner)
    exp = call(env.default, "POST", f"{API}/experiments/create", token=token,
               body={"name": f"xs-{secrets.token_hex(4)}"}).json()["experiment_id"]
    call(env.default, "GET", f"{API}/users/current", token=env.token(other))  # provisioned
    grant = f"{API}/permissions/users/{other.email}/experiments/{exp}"
    for origin in ("https://evil.example", "null"):
        refused = httpx.post(f"{env.default.url}{grant}", json={"permission": "MANAGE"},
                             headers={"Authorization": f"Bearer {token}", "Origin": origin},
                             timeout=30)
        assert refused.status_code == 403, (origin, refused.text)
    same_site = httpx.post(f"{env.default.url}{grant}", json={"permission": "READ"},
                           headers={"Authorization": f"Bearer {token}",
                                    "Origin": env.default.url}, timeout=30)
    assert same_site.status_code in (200, 201), same_site.text
