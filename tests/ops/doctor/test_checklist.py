"""`doctor` against a real platform (PostgreSQL, S3, Keycloak, SSO server): a healthy platform
passes every check, and each injected fault is found with the right fix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from harness.findings import assert_problem
from harness.keycloak import KeycloakServer, admin_client
from harness.platforms import (
    ADMIN_USER,
    SsoPlatform,
    bucket_deleted,
    schema_stamped,
    sso_platform,
)
from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.s3 import S3Server
from mlflow_stack.components import keycloak as kc
from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import apply_system
from mlflow_stack.local import platform
from mlflow_stack.ops.doctor import checklist
from mlflow_stack.ops.doctor.findings import Finding
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration
Platform = SsoPlatform


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory, keycloak: KeycloakServer,
         postgres_server: PostgresServer, s3_server: S3Server) -> Iterator[Platform]:
    with sso_platform(tmp_path_factory.mktemp("doctor"), "doctor", keycloak, postgres_server,
                      s3_server) as plat:
        yield plat


def findings_of(plat: Platform, settings: Settings | None = None) -> dict[str, Finding]:
    return {f.check: f for f in checklist.run(settings or plat.settings, plat.state)}


def with_settings(settings: Settings, **sections: dict[str, object]) -> Settings:
    data = settings.model_dump()
    for section, values in sections.items():
        data[section].update(values)
    return Settings.model_validate(data).model_copy(update={"secrets": settings.secrets})


def test_healthy_platform_passes_every_check(plat: Platform) -> None:
    findings = findings_of(plat)
    assert {f.check for f in findings.values()} >= {
        "server process", "database", "artifact store", "OIDC discovery",
        "Keycloak client and roles", "OIDC client secret", "group plugin",
        "clock skew to Keycloak", "public host allowed"}
    assert [f for f in findings.values() if f.status == "problem"] == []


def test_database_down(plat: Platform) -> None:
    closed = with_settings(plat.settings, database={"port": free_port()})
    findings = {f.check: f for f in checklist.run(closed, plat.state)}
    f = findings["database"]
    assert f.status == "problem" and "is unreachable" in f.finding
    assert "database.host" in f.fix or "running" in f.fix


def test_schema_behind(plat: Platform) -> None:
    with schema_stamped(plat.postgres.dsn("mlflow_doctor"), "0584bdc529eb"):
        assert_problem(findings_of(plat), "database", "schema at revision 0584bdc529eb",
                       "mlflow-stack upgrade (backs up the databases, migrates")


def test_bucket_deleted(plat: Platform) -> None:
    with bucket_deleted(plat.s3, plat.settings.artifacts.bucket):
        assert_problem(findings_of(plat), "artifact store", "does not exist", "apply")


def test_wrong_client_secret(plat: Platform) -> None:
    wrong = plat.settings.model_copy(update={"secrets": plat.settings.secrets.model_copy(
        update={"oidc_client_secret": SecretStr("not-the-secret")})})
    findings = {f.check: f for f in checklist.run(wrong, plat.state)}
    assert findings["OIDC client secret"].status == "problem"
    assert "refuses" in findings["OIDC client secret"].finding
    right = plat.settings.model_copy(update={"secrets": plat.settings.secrets.model_copy(
        update={"oidc_client_secret": kc.client_secret(plat.settings)})})
    assert {f.check: f for f in checklist.run(right, plat.state)}[
        "OIDC client secret"].status == "ok"


def test_admin_role_removed(plat: Platform) -> None:
    admin = admin_client(plat.keycloak, plat.realm)
    user_id = admin.get_user_id(ADMIN_USER)
    assert user_id is not None, ADMIN_USER
    role = admin.get_realm_role("mlflow-admin")
    admin.delete_realm_roles_of_user(user_id, [role])
    try:
        assert_problem(findings_of(plat), "Keycloak client and roles", "role mlflow-admin",
                       "mlflow-stack apply")
    finally:
        apply_system(kc.SYSTEM, plat.settings)
    assert findings_of(plat)["Keycloak client and roles"].status == "ok"


def test_redirect_uri_removed(plat: Platform) -> None:
    admin = admin_client(plat.keycloak, plat.realm)
    client_uuid = admin.get_client_id(plat.settings.auth.client_id)
    assert client_uuid is not None
    rep = admin.get_client(client_uuid)
    rep["redirectUris"] = [u for u in rep["redirectUris"] if not u.endswith("/callback")]
    admin.update_client(client_uuid, rep)
    try:
        assert_problem(findings_of(plat), "Keycloak client and roles", "redirectUris",
                       "mlflow-stack apply")
    finally:
        apply_system(kc.SYSTEM, plat.settings)


def test_group_plugin_missing(plat: Platform) -> None:
    broken = with_settings(plat.settings, auth={"group_plugin": "mlflow_no_such_groups"})
    findings = {f.check: f for f in checklist.run(broken, plat.state)}
    assert findings["group plugin"].status == "problem"
    assert "not importable" in findings["group plugin"].finding
    assert "install mlflow-stack" in findings["group plugin"].fix


def test_public_host_not_allowed(plat: Platform) -> None:
    # The config now names a public host the running server was not started with.
    moved = with_settings(plat.settings, server={"hostname": "mlflow.example.com"})
    findings = {f.check: f for f in checklist.run(moved, plat.state)}
    f = findings["public host allowed"]
    assert f.status == "problem" and "refuses Host mlflow.example.com" in f.finding


def test_server_down(plat: Platform) -> None:
    platform.down(plat.state)
    try:
        f = findings_of(plat)["server process"]
        assert f.status == "problem" and "mlflow-stack up" in f.fix
    finally:
        platform.up(plat.settings, plat.state, NullProgress())
