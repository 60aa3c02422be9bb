"""Plan and apply against a real Keycloak: provisioning, idempotence, drift, tokens. Each test
works in its own realm."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from keycloak import KeycloakAdmin
from pydantic import SecretStr

from components.keycloak.realm import (
    ALICE_PW,
    EXPECTED_TARGETS,
    LOCK,
    PUBLIC,
    by_target,
    client_uuid,
    make_settings,
    new_realm,
    pending,
    realm_admin,
    realm_state,
)
from harness.keycloak import KeycloakServer, create_user, jwt_claims, password_grant
from mlflow_stack.client.login import pkce_pair
from mlflow_stack.components import keycloak as kc
from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import apply_system, plan_system
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration


def test_provision_from_empty_realm_then_zero_changes(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm)
    admin = realm_admin(keycloak, realm)
    before = realm_state(admin)

    planned = plan_system(kc.SYSTEM, settings)
    assert [c.target for c in planned] == EXPECTED_TARGETS
    assert all(c.action == ("update" if c.target == LOCK else "create")
               and c.system == "keycloak" for c in planned)
    assert realm_state(admin) == before, "plan must not write"
    client = by_target(planned)["client mlflow"]
    assert f"{PUBLIC}/callback" in client.detail and "3600" in client.detail

    progress = NullProgress()
    applied = apply_system(kc.SYSTEM, settings, progress)
    assert applied == planned
    # One progress step to read, then one per write (a new client's mappers and scopes are
    # written with it).
    assert progress.steps[0] == f"keycloak: read realm {realm} at {keycloak.url}"
    written = progress.steps[1:]
    assert written and set(written) <= {f"keycloak: {c.action} {c.target}" for c in planned}
    assert "keycloak: create client mlflow" in written

    again = apply_system(kc.SYSTEM, settings)
    assert [c.target for c in again] == EXPECTED_TARGETS
    assert pending(again) == []
    assert pending(plan_system(kc.SYSTEM, settings)) == []

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
    targets = [c.target for c in apply_system(kc.SYSTEM, settings)]
    assert "client tracking mapper mlflow-audience-mapper" in targets
    assert "user alice role ml-admin" in targets
    assert pending(apply_system(kc.SYSTEM, settings)) == []
    token = password_grant(keycloak, realm, "tracking", "alice", ALICE_PW,
                           kc.client_secret(settings).get_secret_value())
    claims = jwt_claims(token["access_token"])
    assert "tracking" in claims["aud"] and "ml-admin" in claims["realm_access"]["roles"]
    assert claims["exp"] - claims["iat"] == 900


def test_login_client_is_public_pkce_and_device_only(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, admin = provisioned
    planned = by_target(plan_system(kc.SYSTEM, settings))
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
    targets = [c.target for c in apply_system(kc.SYSTEM, settings)]
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
    planned = plan_system(kc.SYSTEM, settings)
    assert [(c.target, c.action) for c in pending(planned)] == [(target, action)]
    for text in details:
        assert text in by_target(planned)[target].detail
    assert pending(plan_system(kc.SYSTEM, settings)) == pending(planned), "plan must not repair"

    applied = apply_system(kc.SYSTEM, settings)
    assert pending(applied) == pending(planned)
    assert pending(plan_system(kc.SYSTEM, settings)) == []
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
    assert pending(plan_system(kc.SYSTEM, settings)) == []


def test_grants_to_other_users_are_left_alone(
    keycloak: KeycloakServer, provisioned: tuple[Settings, KeycloakAdmin]
) -> None:
    settings, admin = provisioned
    bob = create_user(keycloak, settings.auth.realm, "bob", "bob-pw-1", "bob@example.test")
    admin.assign_realm_roles(bob, [admin.get_realm_role("mlflow-admin")])
    assert pending(apply_system(kc.SYSTEM, settings)) == []
    assert "mlflow-admin" in {r["name"] for r in admin.get_realm_roles_of_user(bob)}
