"""Logging in to a real Keycloak and what goes wrong: a clear message, nothing written."""

from __future__ import annotations

import uuid
from functools import partial

import pytest

from components.keycloak.realm import (
    ALICE_PW,
    EXPECTED_TARGETS,
    make_settings,
    new_realm,
    pending,
    realm_admin,
    realm_state,
)
from harness.keycloak import KeycloakServer, admin_client
from harness.ports import free_port
from mlflow_stack.components import keycloak as kc
from mlflow_stack.components.protocol import Absent
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import apply_system, plan_system
from mlflow_stack.errors import ConfigError, ServiceUnreachable

pytestmark = pytest.mark.integration


def test_missing_realm(keycloak: KeycloakServer) -> None:
    realm = f"absent-{uuid.uuid4().hex[:8]}"
    settings = make_settings(keycloak, realm)
    for call in (partial(plan_system, kc.SYSTEM), partial(apply_system, kc.SYSTEM),
                 kc.client_secret):
        with pytest.raises(ConfigError) as info:
            call(settings)
        assert f"realm {realm!r} does not exist" in info.value.message
        assert keycloak.url in info.value.message
        assert info.value.exit_code == 2
    # The System's connect says so as Absent: uninstall has nothing to remove there.
    with pytest.raises(Absent) as absent:
        kc.SYSTEM.connect(settings)
    assert absent.value.target == f"realm {realm}"
    assert realm not in {r["realm"] for r in admin_client(keycloak).get_realms()}


def test_wrong_admin_password_writes_nothing(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    admin = realm_admin(keycloak, realm)
    before = realm_state(admin)
    settings = make_settings(keycloak, realm, password="not-the-password")
    for call in (partial(plan_system, kc.SYSTEM), partial(apply_system, kc.SYSTEM),
                 kc.client_secret):
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
        apply_system(kc.SYSTEM, settings)
    assert info.value.message == f"Keycloak at {url} is unreachable: connection refused"
    assert info.value.exit_code == 1


def test_wrong_path_prefix(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, "anything", url=f"{keycloak.url}/auth")
    with pytest.raises(ServiceUnreachable, match="no Keycloak token endpoint"):
        plan_system(kc.SYSTEM, settings)


def test_trailing_slash_in_url(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm, url=f"{keycloak.url}/")
    assert len(pending(apply_system(kc.SYSTEM, settings))) == len(EXPECTED_TARGETS)


def test_missing_admin_password(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, "anything").model_copy(
        update={"secrets": Secrets.model_construct()})
    with pytest.raises(ConfigError, match="KEYCLOAK_ADMIN_PASSWORD or ADMIN_PASSWORD"):
        plan_system(kc.SYSTEM, settings)


def test_missing_realm_admin_user_writes_nothing(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak, with_alice=False)
    admin = realm_admin(keycloak, realm)
    before = realm_state(admin)
    settings = make_settings(keycloak, realm, realm_admin_users=["alice", "carol"])
    with pytest.raises(ConfigError) as info:
        apply_system(kc.SYSTEM, settings)
    assert "'alice', 'carol'" in info.value.message and repr(realm) in info.value.message
    assert realm_state(admin) == before, "nothing half-done: no role, no client"


def test_user_without_admin_rights(keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    settings = make_settings(keycloak, realm, password=ALICE_PW, admin_username="alice",
                             admin_realm=realm)
    with pytest.raises(ServiceUnreachable) as info:
        plan_system(kc.SYSTEM, settings)
    assert "user 'alice' may not" in info.value.message and "403" in info.value.message


def test_missing_admin_realm(keycloak: KeycloakServer) -> None:
    settings = make_settings(keycloak, "anything", admin_realm="no-such-admin-realm")
    with pytest.raises(ConfigError, match="no realm 'no-such-admin-realm'"):
        plan_system(kc.SYSTEM, settings)
