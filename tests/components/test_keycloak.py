"""The Keycloak component against a real Keycloak: provisioning, idempotence, drift, errors,
tokens. Each test works in its own realm."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from keycloak import KeycloakAdmin
from pydantic import SecretStr

from harness.keycloak import (
    KeycloakServer,
    admin_client,
    create_realm,
    create_user,
    jwt_claims,
    password_grant,
)
from harness.ports import free_port
from mlflow_stack.client.login import pkce_pair
from mlflow_stack.components import keycloak as kc
from mlflow_stack.components.base import Change
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.errors import ConfigError, ServiceUnreachable
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration

PUBLIC = "http://127.0.0.1:5123"  # settings.public_url with no hostname: the local URL
ALICE_PW = "alice-pw-1"


def make_settings(server: KeycloakServer, realm: str, password: str | None = None,
                  url: str | None = None, **auth: Any) -> Settings:
    settings = Settings.model_validate({
        "server": {"port": 5123},
        "auth": {"provider": "keycloak", "keycloak_url": url or server.url, "realm": realm,
                 "admin_username": server.admin_user, "realm_admin_users": ["alice"], **auth},
    })
    secret = SecretStr(server.admin_password if password is None else password)
    return settings.model_copy(update={"secrets": Secrets.model_construct(
        keycloak_admin_password=secret)})


def new_realm(server: KeycloakServer, with_alice: bool = True) -> str:
    realm = f"t-{uuid.uuid4().hex[:10]}"
    create_realm(server, realm)
    if with_alice:
        create_user(server, realm, "alice", ALICE_PW, "alice@example.test")
    return realm


def realm_admin(server: KeycloakServer, realm: str) -> KeycloakAdmin:
    return admin_client(server, realm)


def client_uuid(admin: KeycloakAdmin, client_id: str = "mlflow") -> str:
    found = admin.get_client_id(client_id)
    assert found is not None
    return found


def pending(changes: list[Change]) -> list[Change]:
    return [c for c in changes if c.is_change]


def by_target(changes: list[Change]) -> dict[str, Change]:
    return {c.target: c for c in changes}


def realm_state(admin: KeycloakAdmin) -> dict[str, Any]:
    """What apply would touch: roles, clients, role grants of alice."""
    alice = admin.get_user_id("alice")
    return {
        "roles": sorted(r["name"] for r in admin.get_realm_roles()),
        "clients": sorted(c["clientId"] for c in admin.get_clients()),
        "alice": sorted(r["name"] for r in admin.get_realm_roles_of_user(alice)) if alice else [],
    }


MAPPERS = ("mlflow-realm-role-mapper", "mlflow-audience-mapper", "mlflow-client-role-mapper")
EXPECTED_TARGETS = [
    "role mlflow-admin", "role mlflow-user",
    "client mlflow", "client mlflow scopes", *(f"client mlflow mapper {m}" for m in MAPPERS),
    "client mlflow-cli", "client mlflow-cli scopes",
    *(f"client mlflow-cli mapper {m}" for m in MAPPERS),
    "user alice role mlflow-admin",
    "realm user profile attribute email",  # the identity attribute, locked (an update)
]
LOCK = "realm user profile attribute email"


@pytest.fixture
def provisioned(keycloak: KeycloakServer) -> tuple[Settings, KeycloakAdmin]:
    """A realm with alice, after one apply."""
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm)
    kc.apply(settings)
    return settings, realm_admin(keycloak, realm)


def test_provision_from_empty_realm_then_zero_changes(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm)
    admin = realm_admin(keycloak, realm)
    before = realm_state(admin)

    planned = kc.plan(settings)
    assert [c.target for c in planned] == EXPECTED_TARGETS
    assert all(c.action == ("update" if c.target == LOCK else "create")
               and c.system == "keycloak" for c in planned)
    assert realm_state(admin) == before, "plan must not write"
    client = by_target(planned)["client mlflow"]
    assert f"{PUBLIC}/callback" in client.detail and "3600" in client.detail

    progress = NullProgress()
    applied = kc.apply(settings, progress)
    assert applied == planned
    assert progress.steps == [f"keycloak: read realm {realm} at {keycloak.url}",
                              f"keycloak: apply {len(EXPECTED_TARGETS)} change(s)"]

    again = kc.apply(settings)
    assert [c.target for c in again] == EXPECTED_TARGETS
    assert pending(again) == []
    assert pending(kc.plan(settings)) == []

    # Users can no longer edit the email that names their MLflow account.
    email = next(a for a in admin.get_realm_users_profile()["attributes"]
                 if a["name"] == "email")
    assert email["permissions"]["edit"] == ["admin"]
    # The client is exactly what the reference lists.
    rep = admin.get_client(client_uuid(admin))
    assert rep["protocol"] == "openid-connect" and rep["enabled"] is True
    assert rep["publicClient"] is False and rep["standardFlowEnabled"] is True
    assert rep["serviceAccountsEnabled"] is False
    assert rep["implicitFlowEnabled"] is False and rep["directAccessGrantsEnabled"] is True
    assert sorted(rep["redirectUris"]) == sorted(
        [f"{PUBLIC}/*", f"{PUBLIC}/oauth2/callback", f"{PUBLIC}/callback"])
    assert sorted(rep["webOrigins"]) == sorted([PUBLIC, "+"])
    assert rep["attributes"]["access.token.lifespan"] == "3600"
    assert rep["attributes"]["post.logout.redirect.uris"] == "+"
    # Reference scopes, plus Keycloak's own defaults (basic carries `sub`); openid is implicit.
    assert {"email", "profile", "roles", "offline_access", "basic"} <= set(
        rep["defaultClientScopes"])
    assert {"address", "phone"} <= set(rep["optionalClientScopes"])
    assert "offline_access" not in rep["optionalClientScopes"]
    mappers = {m["name"]: m for m in rep["protocolMappers"]}
    realm_roles = mappers["mlflow-realm-role-mapper"]
    assert realm_roles["protocolMapper"] == "oidc-usermodel-realm-role-mapper"
    assert realm_roles["config"]["claim.name"] == "realm_access.roles"
    assert realm_roles["config"]["multivalued"] == "true"
    audience = mappers["mlflow-audience-mapper"]["config"]
    assert audience["included.client.audience"] == "mlflow"
    assert audience["included.custom.audience"] == "mlflow"
    assert (audience["access.token.claim"], audience["id.token.claim"]) == ("true", "false")
    client_roles = mappers["mlflow-client-role-mapper"]["config"]
    assert client_roles["claim.name"] == "resource_access.${client_id}.roles"
    assert client_roles["usermodel.clientRoleMapping.clientId"] == "mlflow"
    assert "mlflow-admin" in realm_state(admin)["alice"]


def test_token_of_realm_admin_user_after_apply(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, admin = provisioned
    secret = kc.client_secret(settings)
    assert isinstance(secret, SecretStr) and "*" in str(secret)
    # A client role shows up under resource_access.mlflow.roles (the client role mapper).
    uid = client_uuid(admin)
    admin.create_client_role(uid, {"name": "reviewer"})
    alice = admin.get_user_id("alice")
    assert alice is not None
    admin.assign_client_role(alice, uid, [admin.get_client_role(uid, "reviewer")])

    token = password_grant(keycloak, settings.auth.realm, "mlflow", "alice", ALICE_PW,
                           secret.get_secret_value())
    claims = jwt_claims(token["access_token"])
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert "mlflow" in aud
    assert "mlflow-admin" in claims["realm_access"]["roles"]
    assert claims["resource_access"]["mlflow"]["roles"] == ["reviewer"]
    assert claims["sub"], "the basic scope (sub claim) must stay attached"
    assert claims["iss"] == keycloak.issuer(settings.auth.realm)
    assert claims["exp"] - claims["iat"] == 3600
    # The audience mapper is access-token only; the role mapper reaches the ID token too.
    id_claims = jwt_claims(token["id_token"])
    assert "mlflow-admin" in id_claims["realm_access"]["roles"]


def test_custom_names_and_lifespan(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm, client_id="tracking", admin_role="ml-admin",
                             user_role="ml-user", access_token_lifespan=900)
    targets = [c.target for c in kc.apply(settings)]
    assert "client tracking mapper mlflow-audience-mapper" in targets
    assert "user alice role ml-admin" in targets
    assert pending(kc.apply(settings)) == []
    token = password_grant(keycloak, realm, "tracking", "alice", ALICE_PW,
                           kc.client_secret(settings).get_secret_value())
    claims = jwt_claims(token["access_token"])
    assert "tracking" in claims["aud"] and "ml-admin" in claims["realm_access"]["roles"]
    assert claims["exp"] - claims["iat"] == 900


def test_login_client_is_public_pkce_and_device_only(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, admin = provisioned
    planned = by_target(kc.plan(settings))
    assert planned["client mlflow-cli"].action == "unchanged"
    rep = admin.get_client(client_uuid(admin, "mlflow-cli"))
    assert rep["publicClient"] is True and rep["standardFlowEnabled"] is True
    assert rep["directAccessGrantsEnabled"] is False and rep["implicitFlowEnabled"] is False
    assert rep["serviceAccountsEnabled"] is False
    assert rep["redirectUris"] == ["http://127.0.0.1/*"]
    assert rep["attributes"]["pkce.code.challenge.method"] == "S256"
    assert rep["attributes"]["oauth2.device.authorization.grant.enabled"] == "true"
    assert "offline_access" in rep["optionalClientScopes"]
    assert "offline_access" not in rep["defaultClientScopes"]
    assert {"basic", "email", "profile", "roles"} <= set(rep["defaultClientScopes"])
    # Its tokens are for the server's client: same audience and role claims.
    audience = next(m for m in rep["protocolMappers"] if m["name"] == "mlflow-audience-mapper")
    assert audience["config"]["included.client.audience"] == "mlflow"
    issuer = keycloak.issuer(settings.auth.realm)
    # The password grant (a secret-less client collecting passwords) is refused.
    refused = httpx.post(f"{issuer}/protocol/openid-connect/token", timeout=30, data={
        "grant_type": "password", "client_id": "mlflow-cli", "username": "alice",
        "password": ALICE_PW})
    assert refused.status_code in (400, 401) and refused.json()["error"] == "unauthorized_client"
    # A device authorization starts (the grant is on), with PKCE only.
    device_url = f"{issuer}/protocol/openid-connect/auth/device"
    without = httpx.post(device_url, data={"client_id": "mlflow-cli"}, timeout=30)
    assert without.status_code == 400, without.text
    _, challenge = pkce_pair()
    device = httpx.post(device_url, timeout=30, data={
        "client_id": "mlflow-cli", "code_challenge": challenge, "code_challenge_method": "S256"})
    assert device.status_code == 200 and device.json()["user_code"]


def test_login_client_can_be_turned_off(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm, cli_client_id=None)
    targets = [c.target for c in kc.apply(settings)]
    assert not [t for t in targets if t.startswith("client mlflow-cli")]
    assert "mlflow-cli" not in realm_state(realm_admin(keycloak, realm))["clients"]
    with pytest.raises(ValueError, match="cli_client_id 'mlflow' must differ"):
        make_settings(keycloak, realm, cli_client_id="mlflow")


def _open_login_client(admin: KeycloakAdmin) -> None:
    uid = client_uuid(admin, "mlflow-cli")
    admin.update_client(uid, {"directAccessGrantsEnabled": True,
                              "redirectUris": ["http://127.0.0.1/*", "*"]})


# --------------------------------------------------------------------------------------------
# drift: made by hand, shown by plan, repaired by apply


def _remove_callback(admin: KeycloakAdmin) -> None:
    uid = client_uuid(admin)
    rep = admin.get_client(uid)
    admin.update_client(uid, {"redirectUris": [u for u in rep["redirectUris"]
                                               if u != f"{PUBLIC}/callback"]})


def _add_foreign_redirect(admin: KeycloakAdmin) -> None:
    uid = client_uuid(admin)
    rep = admin.get_client(uid)
    admin.update_client(uid, {"redirectUris": [*rep["redirectUris"], "https://evil.test/*"]})


def _delete_audience_mapper(admin: KeycloakAdmin) -> None:
    uid = client_uuid(admin)
    mapper = next(m for m in admin.get_mappers_from_client(uid)
                  if m["name"] == "mlflow-audience-mapper")
    admin.remove_client_mapper(uid, mapper["id"])


def _audience_in_id_token(admin: KeycloakAdmin) -> None:
    uid = client_uuid(admin)
    mapper = next(m for m in admin.get_mappers_from_client(uid)
                  if m["name"] == "mlflow-audience-mapper")
    mapper["config"]["id.token.claim"] = "true"
    admin.update_client_mapper(uid, mapper["id"], mapper)


def _take_admin_role(admin: KeycloakAdmin) -> None:
    alice = admin.get_user_id("alice")
    assert alice is not None
    admin.delete_realm_roles_of_user(alice, [admin.get_realm_role("mlflow-admin")])


def _change_lifespan(admin: KeycloakAdmin) -> None:
    uid = client_uuid(admin)
    admin.update_client(uid, {"attributes": {"access.token.lifespan": "600"}})


def _offline_access_optional(admin: KeycloakAdmin) -> None:
    uid = client_uuid(admin)
    scope = admin.get_client_scope_by_name("offline_access")
    assert scope is not None
    admin.delete_client_default_client_scope(uid, scope["id"])
    admin.add_client_optional_client_scope(uid, scope["id"], {})


def _delete_user_role(admin: KeycloakAdmin) -> None:
    admin.delete_realm_role("mlflow-user")


def _make_public(admin: KeycloakAdmin) -> None:
    admin.update_client(client_uuid(admin), {"publicClient": True, "implicitFlowEnabled": True})


DRIFTS: list[tuple[str, Callable[[KeycloakAdmin], None], str, str, list[str]]] = [
    # (id, drift, target, action, substrings of the plan's detail)
    ("redirect-uri-removed", _remove_callback, "client mlflow", "update",
     [f"redirectUris: + {PUBLIC}/callback"]),
    ("foreign-redirect-uri-added", _add_foreign_redirect, "client mlflow", "update",
     ["redirectUris: - https://evil.test/*"]),
    ("mapper-deleted", _delete_audience_mapper, "client mlflow mapper mlflow-audience-mapper",
     "create", ["oidc-audience-mapper"]),
    ("mapper-changed", _audience_in_id_token, "client mlflow mapper mlflow-audience-mapper",
     "update", ["config.id.token.claim: true → false"]),
    ("admin-role-taken", _take_admin_role, "user alice role mlflow-admin", "create",
     ["grant realm role mlflow-admin"]),
    ("lifespan-changed", _change_lifespan, "client mlflow", "update",
     ["attributes.access.token.lifespan: 600 → 3600"]),
    ("scope-moved", _offline_access_optional, "client mlflow scopes", "update",
     ["default: + offline_access (moved from optional)"]),
    ("role-deleted", _delete_user_role, "role mlflow-user", "create", []),
    ("made-public", _make_public, "client mlflow", "update",
     ["publicClient: true → false", "implicitFlowEnabled: true → false"]),
    ("login-client-opened", _open_login_client, "client mlflow-cli", "update",
     ["directAccessGrantsEnabled: true → false", "redirectUris: - *"]),
]


@pytest.mark.parametrize(("drift", "target", "action", "details"),
                         [d[1:] for d in DRIFTS], ids=[d[0] for d in DRIFTS])
def test_drift_shown_by_plan_and_repaired_by_apply(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin],
    drift: Callable[[KeycloakAdmin], None], target: str, action: str, details: list[str],
) -> None:
    settings, admin = provisioned
    drift(admin)
    planned = kc.plan(settings)
    assert [(c.target, c.action) for c in pending(planned)] == [(target, action)]
    for text in details:
        assert text in by_target(planned)[target].detail
    assert pending(kc.plan(settings)) == pending(planned), "plan must not repair"

    applied = kc.apply(settings)
    assert pending(applied) == pending(planned)
    assert pending(kc.plan(settings)) == []
    # Repaired for real: alice's token has the audience and the role again, 3600 s long.
    token = password_grant(keycloak, settings.auth.realm, "mlflow", "alice", ALICE_PW,
                           kc.client_secret(settings).get_secret_value())
    claims = jwt_claims(token["access_token"])
    assert "mlflow" in claims["aud"] and "mlflow-admin" in claims["realm_access"]["roles"]
    assert claims["exp"] - claims["iat"] == 3600


def test_role_through_group_counts_as_granted(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, admin = provisioned
    group_id = admin.create_group({"name": "mlflow-admins"})
    assert group_id is not None
    admin.assign_group_realm_roles(group_id, [admin.get_realm_role("mlflow-admin")])
    alice = admin.get_user_id("alice")
    assert alice is not None
    admin.group_user_add(alice, group_id)
    _take_admin_role(admin)
    assert pending(kc.plan(settings)) == []


def test_grants_to_other_users_are_left_alone(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, admin = provisioned
    bob = create_user(keycloak, settings.auth.realm, "bob", "bob-pw-1", "bob@example.test")
    admin.assign_realm_roles(bob, [admin.get_realm_role("mlflow-admin")])
    assert pending(kc.apply(settings)) == []
    assert "mlflow-admin" in {r["name"] for r in admin.get_realm_roles_of_user(bob)}


# --------------------------------------------------------------------------------------------
# errors: clear message, nothing written


def test_missing_realm(keycloak: KeycloakServer) -> None:
    realm = f"absent-{uuid.uuid4().hex[:8]}"
    settings = make_settings(keycloak, realm)
    for call in (kc.plan, kc.apply, kc.client_secret):
        with pytest.raises(ConfigError) as info:
            call(settings)
        assert f"realm {realm!r} does not exist" in info.value.message
        assert keycloak.url in info.value.message
        assert info.value.exit_code == 2
    assert realm not in {r["realm"] for r in admin_client(keycloak).get_realms()}


def test_wrong_admin_password_writes_nothing(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    admin = realm_admin(keycloak, realm)
    before = realm_state(admin)
    settings = make_settings(keycloak, realm, password="not-the-password")
    for call in (kc.plan, kc.apply, kc.client_secret):
        with pytest.raises(ServiceUnreachable) as info:
            call(settings)
        message = info.value.message
        assert keycloak.url in message and repr(keycloak.admin_user) in message
        assert "Invalid user credentials" in message
        assert "not-the-password" not in message + str(info.value.hint)
        assert info.value.exit_code == 1
    assert realm_state(admin) == before


def test_unreachable_keycloak(keycloak: KeycloakServer) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(keycloak, "anything", url=url)
    with pytest.raises(ServiceUnreachable) as info:
        kc.apply(settings)
    assert info.value.message == f"Keycloak at {url} is unreachable: connection refused"
    assert info.value.exit_code == 1


def test_wrong_path_prefix(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, "anything", url=f"{keycloak.url}/auth")
    with pytest.raises(ServiceUnreachable, match="no Keycloak token endpoint"):
        kc.plan(settings)


def test_trailing_slash_in_url(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm, url=f"{keycloak.url}/")
    assert len(pending(kc.apply(settings))) == len(EXPECTED_TARGETS)


def test_missing_admin_password(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, "anything").model_copy(
        update={"secrets": Secrets.model_construct()})
    with pytest.raises(ConfigError, match="KEYCLOAK_ADMIN_PASSWORD or ADMIN_PASSWORD"):
        kc.plan(settings)


def test_missing_realm_admin_user_writes_nothing(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak, with_alice=False)
    admin = realm_admin(keycloak, realm)
    before = realm_state(admin)
    settings = make_settings(keycloak, realm, realm_admin_users=["alice", "carol"])
    with pytest.raises(ConfigError) as info:
        kc.apply(settings)
    assert "'alice', 'carol'" in info.value.message and repr(realm) in info.value.message
    assert realm_state(admin) == before, "nothing half-done: no role, no client"


def test_user_without_admin_rights(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm, password=ALICE_PW, admin_username="alice",
                             admin_realm=realm)
    with pytest.raises(ServiceUnreachable) as info:
        kc.plan(settings)
    assert "user 'alice' may not" in info.value.message and "403" in info.value.message


def test_missing_admin_realm(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, "anything", admin_realm="no-such-admin-realm")
    with pytest.raises(ConfigError, match="no realm 'no-such-admin-realm'"):
        kc.plan(settings)


def test_client_secret_before_apply(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, new_realm(keycloak))
    with pytest.raises(kc.ClientNotProvisioned, match="client 'mlflow' does not exist") as info:
        kc.client_secret(settings)
    assert "mlflow-stack apply" in str(info.value.hint)


# --------------------------------------------------------------------------------------------
# destroy


def test_destroy_keeps_everything_without_purge(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, admin = provisioned
    before = realm_state(admin)
    secret = kc.client_secret(settings)
    changes = kc.destroy(settings)
    assert pending(changes) == []
    assert "kept" in by_target(changes)["client mlflow"].detail
    assert "kept" in by_target(changes)["client mlflow-cli"].detail
    assert "held directly by 1 user(s)" in by_target(changes)["role mlflow-admin"].detail
    assert realm_state(admin) == before
    assert kc.client_secret(settings).get_secret_value() == secret.get_secret_value()


def test_destroy_with_purge(keycloak: KeycloakServer,
                            provisioned: tuple[Settings, KeycloakAdmin]) -> None:
    settings, admin = provisioned
    dry = kc.destroy(settings, purge=True, dry_run=True)
    assert [(c.action, c.target) for c in dry] == [
        ("delete", "client mlflow"), ("delete", "client mlflow-cli"),
        ("delete", "role mlflow-admin"), ("delete", "role mlflow-user")]
    assert {"mlflow", "mlflow-cli"} <= set(realm_state(admin)["clients"])
    assert kc.destroy(settings, purge=True) == dry
    state = realm_state(admin)
    assert not {"mlflow", "mlflow-cli"} & set(state["clients"])
    assert not {"mlflow-admin", "mlflow-user"} & set(state["roles"])
    assert admin.get_user_id("alice") is not None, "users are never deleted"
    assert pending(kc.destroy(settings, purge=True)) == []
    # And apply brings it all back (the email lock was kept: a realm setting, not an object).
    assert len(pending(kc.apply(settings))) == len(EXPECTED_TARGETS) - 1


def test_destroy_of_missing_realm_is_a_no_op(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, f"absent-{uuid.uuid4().hex[:8]}")
    changes = kc.destroy(settings, purge=True)
    assert pending(changes) == [] and "nothing to remove" in changes[0].detail
