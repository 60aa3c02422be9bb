"""One realm and one MLflow server with SSO for the client tests (session scope: ~20 s to start).

The realm is the reference's (confidential `mlflow` client, audience and realm-role mappers) with
the `mlflow` client's access tokens cut to 30 s, plus the clients the other token sources need:
`mlflow-cli` (public, PKCE, device grant, loopback redirect) and `ci-runner` (service account
with the mlflow-user role).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.client_site import (
    CI_CLIENT,
    CLI_CLIENT,
    LIFESPAN,
    REALM,
    ClientSite,
)
from harness.keycloak import KeycloakServer, admin_client, create_client
from harness.ports import free_port
from harness.sso import (
    ADMIN_ROLE,
    USER_ROLE,
    audience_mapper,
    provision_realm,
    realm_role_mapper,
    running,
    sso_settings,
)


@pytest.fixture(scope="session")
def client_site(keycloak: KeycloakServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientSite]:
    port = free_port()
    realm = provision_realm(keycloak, REALM, f"http://127.0.0.1:{port}", users={
        "alice": [ADMIN_ROLE], "bob": [USER_ROLE], "carol": [USER_ROLE]})
    admin = admin_client(keycloak, REALM)
    internal = admin.get_client_id(realm.client_id)
    assert internal is not None
    rep = admin.get_client(internal)
    rep.setdefault("attributes", {})["access.token.lifespan"] = str(LIFESPAN)
    admin.update_client(internal, rep)
    mappers = [realm_role_mapper(), audience_mapper(realm.client_id)]
    create_client(keycloak, REALM, CLI_CLIENT, public=True, direct_access_grants=False,
                  redirect_uris=["http://127.0.0.1/*"], protocolMappers=mappers,
                  attributes={"pkce.code.challenge.method": "S256",
                              "oauth2.device.authorization.grant.enabled": "true"})
    ci_secret = create_client(keycloak, REALM, CI_CLIENT, service_accounts=True,
                              direct_access_grants=False, protocolMappers=mappers)
    assert ci_secret is not None
    ci_internal = admin.get_client_id(CI_CLIENT)
    assert ci_internal is not None
    service_user = admin.get_client_service_account_user(ci_internal)
    admin.assign_realm_roles(service_user["id"], [admin.get_realm_role(USER_ROLE)])
    settings = sso_settings(realm, port)
    with running(settings, tmp_path_factory.mktemp("client-sso") / "state") as server:
        yield ClientSite(keycloak, realm, server, ci_secret)
