"""Permissions as code against the real platform: Keycloak roles as groups, the SSO server on
PostgreSQL, grants reconciled by the permissions system, drift made through the oidc-auth API
(what its UI calls), `permissions export` round-tripping through the config, and `up`
applying a local sqlite platform's grants.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from harness.keycloak import KeycloakServer, admin_client
from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, SsoServer, provision_realm, running
from mlflow_stack.components.permissions import SYSTEM
from mlflow_stack.config.model import Settings
from mlflow_stack.config.permissions import PermissionsSettings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import apply_system, plan_system

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"
TEAMS = ("team-a", "team-b", "team-c")
# Each server process reuses a permission decision this long (auth.permission_cache_seconds):
# the documented bound on when a grant written by apply takes effect.
CACHE_SECONDS = 2


def settle() -> None:
    time.sleep(CACHE_SECONDS + 0.5)


@dataclass
class Platform:
    realm: SsoRealm
    server: SsoServer
    settings: Settings
    experiments: dict[str, str]  # name -> id

    def call(self, who: str, method: str, path: str,
             body: dict[str, Any] | None = None, **params: str) -> httpx.Response:
        return httpx.request(method, f"{self.server.url}{path}", json=body, params=params,
                             timeout=30.0,
                             headers={"Authorization": f"Bearer {self.realm.token(who)}"})

    def can_read(self, who: str, experiment: str) -> bool:
        r = self.call(who, "GET", f"{API}/experiments/get",
                      experiment_id=self.experiments[experiment])
        assert r.status_code in (200, 403), r.text
        return r.status_code == 200

    def can_write(self, who: str, experiment: str) -> bool:
        r = self.call(who, "POST", f"{API}/runs/create",
                      {"experiment_id": self.experiments[experiment]})
        assert r.status_code in (200, 403), r.text
        return r.status_code == 200

    def can_read_model(self, who: str, name: str) -> bool:
        r = self.call(who, "GET", f"{API}/registered-models/get", name=name)
        assert r.status_code in (200, 403), r.text
        return r.status_code == 200

    def with_grants(self, *grants: dict[str, Any], scope: str = "declared") -> Settings:
        return self.settings.model_copy(update={"permissions": PermissionsSettings.model_validate(
            {"scope": scope, "grants": list(grants)})})


def realm_with_teams(keycloak: KeycloakServer, name: str, base_url: str) -> SsoRealm:
    realm = provision_realm(keycloak, name, base_url, users={
        "alice": [ADMIN_ROLE], "bob": [USER_ROLE], "carol": [USER_ROLE]})
    admin = admin_client(keycloak, realm.realm)
    for team in TEAMS:
        admin.create_realm_role({"name": team})
    realm.set_roles("bob", [USER_ROLE, "team-a"])
    realm.set_roles("carol", [USER_ROLE, "team-b"])
    return realm


def sso_on(realm: SsoRealm, port: int, database: dict[str, Any],
           secrets: Secrets) -> Settings:
    settings = Settings.model_validate({
        "server": {"port": port, "workers": 1},
        "database": database,
        "auth": {"provider": "keycloak", "keycloak_url": realm.server.url, "realm": realm.realm,
                 "client_id": realm.client_id, "default_permission": "NO_PERMISSIONS",
                 "permission_cache_seconds": CACHE_SECONDS},
    })
    return settings.model_copy(update={"secrets": secrets.model_copy(
        update={"oidc_client_secret": SecretStr(realm.client_secret)})})


@pytest.fixture(scope="module")
def platform(keycloak: KeycloakServer, postgres_server: PostgresServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    realm = realm_with_teams(keycloak, f"perm-{suffix}", f"http://127.0.0.1:{port}")
    settings = sso_on(realm, port, {
        "backend": "postgresql", "host": postgres_server.host, "port": postgres_server.port,
        "user": postgres_server.superuser, "name": f"mlflow_{suffix}",
        "auth_name": f"mlflow_auth_{suffix}"},
        Secrets.model_construct(db_password=SecretStr(postgres_server.password)))
    with running(settings, tmp_path_factory.mktemp("perm") / "state") as server:
        p = Platform(realm, server, settings, {})
        for name in ("team-a-exp", "shared", "team-b-private"):
            r = p.call("alice", "POST", f"{API}/experiments/create", {"name": name})
            assert r.status_code == 200, r.text
            p.experiments[name] = r.json()["experiment_id"]
        for model in ("team-a-model", "team-b-model"):
            r = p.call("alice", "POST", f"{API}/registered-models/create", {"name": model})
            assert r.status_code == 200, r.text
        for who in ("bob", "carol"):  # signed in once: their accounts and groups exist
            assert p.call(who, "GET", f"{API}/experiments/search",
                          max_results="1").status_code == 200
        yield p


GRANTS: tuple[dict[str, Any], ...] = (
    {"group": "team-a", "experiment_pattern": "^team-a-", "permission": "EDIT"},
    {"group": "team-b", "experiment": "shared", "permission": "READ"},
    {"group": "team-a", "experiment": "shared", "permission": "EDIT"},
    {"user": "bob@example.test", "registered_model": "team-a-model", "permission": "READ"},
    {"group": "team-b", "registered_model_pattern": "^team-b-", "permission": "MANAGE"},
    {"user": "dave@example.test", "experiment": "shared", "permission": "READ"},
    {"group": "team-b", "experiment": "not-created-yet", "permission": "READ"},
)


def pending(settings: Settings) -> list[tuple[str, str, str]]:
    return [(c.action, c.target, c.detail) for c in plan_system(SYSTEM, settings)
            if c.is_change]


def test_apply_grants_what_the_config_declares_and_plan_then_shows_nothing(
        platform: Platform) -> None:
    p = platform
    assert not p.can_read("bob", "team-a-exp") and not p.can_read("carol", "shared")
    settings = p.with_grants(*GRANTS)
    planned = pending(settings)
    assert [a for a, _, _ in planned] == ["create"] * 5
    report = {c.target: c.detail for c in plan_system(SYSTEM, settings) if not c.is_change}
    assert "has not signed in yet" in report["user dave@example.test: experiment 'shared'"]
    assert "no active experiment named 'not-created-yet'" in report[
        "group team-b: experiment 'not-created-yet'"]

    applied = apply_system(SYSTEM, settings)
    assert sorted(c.action for c in applied if c.is_change) == ["create"] * 5
    assert pending(settings) == []
    settle()
    assert p.can_write("bob", "team-a-exp") and p.can_write("bob", "shared")
    assert not p.can_read("bob", "team-b-private")
    assert p.can_read("carol", "shared") and not p.can_write("carol", "shared")
    assert not p.can_read("carol", "team-a-exp")
    assert p.can_read_model("bob", "team-a-model") and not p.can_read_model("bob", "team-b-model")
    assert p.can_read_model("carol", "team-b-model") and not p.can_read_model("carol",
                                                                              "team-a-model")


def test_drift_made_through_the_ui_api_is_shown_and_put_back(platform: Platform) -> None:
    p = platform
    settings = p.with_grants(*GRANTS)
    apply_system(SYSTEM, settings)
    shared, private = p.experiments["shared"], p.experiments["team-b-private"]
    groups = f"{API}/permissions/groups"
    # An admin raises team-b to EDIT on shared, and gives team-b and team-c more, by hand.
    r = p.call("alice", "POST", groups, {"group_name": "team-c"})  # nobody of it signed in
    assert r.status_code == 201, r.text
    for method, path in (("PATCH", f"{groups}/team-b/experiments/{shared}"),
                         ("POST", f"{groups}/team-b/experiments/{private}"),
                         ("POST", f"{groups}/team-c/experiments/{private}")):
        r = p.call("alice", method, path, {"permission": "EDIT"})
        assert r.status_code in (200, 201), (path, r.text)
    settle()
    assert p.can_write("carol", "shared")

    assert pending(settings) == [
        ("update", "group team-b: experiment 'shared'", "EDIT -> READ (changed outside the "
         "config)"),
        ("delete", "group team-b: experiment 'team-b-private'", "EDIT: not in the config")]
    # team-c is no subject of this config: with scope: all its grant is drift too.
    everything = pending(p.with_grants(*GRANTS, scope="all"))
    assert ("delete", "group team-c: experiment 'team-b-private'",
            "EDIT: not in the config") in everything

    apply_system(SYSTEM, settings)
    assert pending(settings) == []
    settle()
    assert p.can_read("carol", "shared") and not p.can_write("carol", "shared")
    assert not p.can_read("carol", "team-b-private")
    r = p.call("alice", "GET", f"{groups}/team-c/experiments")
    assert r.status_code == 200 and private in r.text  # untouched: outside the scope


def test_export_writes_the_live_grants_so_that_plan_shows_no_change(
        platform: Platform, tmp_path: Path) -> None:
    p = platform
    apply_system(SYSTEM, p.with_grants(*GRANTS))
    db = p.settings.database
    config = tmp_path / "platform.yaml"
    config.write_text(yaml.safe_dump({
        "database": db.model_dump(mode="json", exclude_none=True),
        "auth": {"provider": "keycloak", "keycloak_url": p.realm.server.url,
                 "realm": p.realm.realm}}))
    password = p.settings.secrets.effective_db_password
    assert password is not None
    env = {**os.environ, "MLFLOW_STACK_DB_PASSWORD": password.get_secret_value()}
    out = tmp_path / "grants.yaml"
    cli = [sys.executable, "-m", "mlflow_stack.cli.main", "permissions", "export",
           "-c", str(config), "-f", str(out)]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert password.get_secret_value() not in done.stdout + done.stderr + out.read_text()
    exported = yaml.safe_load(out.read_text())["permissions"]
    assert exported["scope"] == "all"
    assert {"group": "team-a", "experiment_pattern": "^team-a-",
            "permission": "EDIT"} in exported["grants"]
    # alice created the experiments and models: mlflow-oidc-auth made her their owner.
    assert {"user": "alice@example.test", "experiment": "shared",
            "permission": "MANAGE"} in exported["grants"]

    adopted = p.settings.model_copy(update={
        "permissions": PermissionsSettings.model_validate(exported)})
    assert pending(adopted) == []

    again = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_up_applies_a_local_sqlite_platforms_grants(
        keycloak: KeycloakServer, tmp_path: Path) -> None:
    port = free_port()
    realm = realm_with_teams(keycloak, f"perm-local-{uuid.uuid4().hex[:8]}",
                             f"http://127.0.0.1:{port}")
    settings = sso_on(realm, port, {"backend": "sqlite"}, Secrets.model_construct())
    settings = settings.model_copy(update={"permissions": PermissionsSettings.model_validate(
        {"grants": [{"group": "team-a", "experiment_pattern": ".*", "permission": "READ"}]})})
    with running(settings, tmp_path / "state") as server:
        p = Platform(realm, server, settings, {"Default": "0"})
        assert p.can_read("bob", "Default")
        assert not p.can_read("carol", "Default")
        assert not p.can_write("bob", "Default")


def test_a_first_apply_plans_the_grants_before_the_database_exists(
        postgres_server: PostgresServer) -> None:
    """apply plans every system before the first write: the SSO database PostgreSQL's step
    will create does not exist yet, and the grants wait for it in one step."""
    missing = f"mlflow_auth_{uuid.uuid4().hex[:8]}"
    settings = Settings.model_validate({
        "database": {"backend": "postgresql", "host": postgres_server.host,
                     "port": postgres_server.port, "user": postgres_server.superuser,
                     "auth_name": missing},
        "auth": {"provider": "keycloak", "keycloak_url": "http://127.0.0.1:9"},
        "permissions": {"grants": list(GRANTS)},
    }).model_copy(update={"secrets": Secrets.model_construct(
        db_password=SecretStr(postgres_server.password))})
    assert [(c.action, c.target, c.detail) for c in plan_system(SYSTEM, settings)] == [
        ("create", f"{len(GRANTS)} declared grant(s)", "once the SSO schema exists")]
