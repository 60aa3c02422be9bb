"""SSO with the auth DB on a real PostgreSQL: `up` creates it beside MLflow's, migrates it with its
own alembic version table, and a bearer-token API call provisions the user there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.sso import ADMIN_ROLE, USER_ROLE, SsoRealm, SsoServer, provision_realm, running
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.launch.oidc_auth import AUTH_ALEMBIC_TABLE

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"


@dataclass
class PgSso:
    realm: SsoRealm
    server: SsoServer
    pg: PostgresServer
    db_name: str
    auth_name: str

    def call(self, who: str, method: str, path: str,
             body: dict[str, object] | None = None) -> httpx.Response:
        return httpx.request(method, f"{self.server.url}{path}", json=body, timeout=30.0,
                             headers={"Authorization": f"Bearer {self.realm.new_token(who)}"})

    def query(self, dbname: str, sql: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.pg.dsn(dbname)) as conn:
            return list(conn.execute(sql, params).fetchall())

    def tables(self, dbname: str) -> set[str]:
        rows = self.query(dbname, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {str(r[0]) for r in rows}


@pytest.fixture(scope="module")
def env(keycloak: KeycloakServer, postgres_server: PostgresServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgSso]:
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    realm = provision_realm(keycloak, f"sso-pg-{suffix}", f"http://127.0.0.1:{port}",
                            users={"alice": [ADMIN_ROLE], "bob": [USER_ROLE]})
    db_name, auth_name = f"mlflow_{suffix}", f"mlflow_auth_{suffix}"
    settings = Settings.model_validate({
        "server": {"port": port},  # default worker count, as users get it
        "database": {"backend": "postgresql", "host": postgres_server.host,
                     "port": postgres_server.port, "user": postgres_server.superuser,
                     "name": db_name, "auth_name": auth_name},
        "auth": {"provider": "keycloak", "keycloak_url": keycloak.url, "realm": realm.realm,
                 "client_id": realm.client_id},
    })
    settings = settings.model_copy(update={"secrets": Secrets.model_construct(
        db_password=SecretStr(postgres_server.password),
        oidc_client_secret=SecretStr(realm.client_secret))})
    with running(settings, tmp_path_factory.mktemp("sso-pg") / "state") as server:
        yield PgSso(realm, server, postgres_server, db_name, auth_name)


def test_up_creates_the_auth_database_with_its_own_version_table(env: PgSso) -> None:
    databases = {str(r[0]) for r in env.query("postgres", "SELECT datname FROM pg_database")}
    assert {env.db_name, env.auth_name} <= databases
    auth_tables = env.tables(env.auth_name)
    assert {"users", "groups", "user_groups", "experiment_permissions"} <= auth_tables
    # mlflow-oidc-auth's alembic chain keeps its revision apart from MLflow's.
    assert AUTH_ALEMBIC_TABLE in auth_tables
    assert "alembic_version" not in auth_tables
    assert env.query(env.auth_name, f"SELECT version_num FROM {AUTH_ALEMBIC_TABLE}")
    # ...and MLflow's database holds MLflow's schema only.
    mlflow_tables = env.tables(env.db_name)
    assert {"alembic_version", "experiments", "runs"} <= mlflow_tables
    assert not {"users", AUTH_ALEMBIC_TABLE} & mlflow_tables


def test_bearer_call_provisions_the_user_in_the_auth_db(env: PgSso) -> None:
    email = env.realm.users["bob"].email
    assert env.query(env.auth_name, "SELECT 1 FROM users WHERE username = %s", email) == []
    name = f"pg-{uuid.uuid4().hex[:6]}"
    created = env.call("bob", "POST", f"{API}/experiments/create", {"name": name})
    assert created.status_code == 200, created.text
    experiment_id = str(created.json()["experiment_id"])

    rows = env.query(env.auth_name, "SELECT is_admin, active FROM users WHERE username = %s",
                     email)
    assert rows == [(False, True)]
    groups = env.query(env.auth_name, "SELECT g.group_name FROM user_groups ug "
                       "JOIN users u ON u.id = ug.user_id JOIN groups g ON g.id = ug.group_id "
                       "WHERE u.username = %s", email)
    assert [r[0] for r in groups] == [USER_ROLE]
    # The creator's MANAGE grant lands in the auth DB; the experiment in MLflow's.
    grants = env.query(env.auth_name, "SELECT p.permission FROM experiment_permissions p "
                       "JOIN users u ON u.id = p.user_id "
                       "WHERE u.username = %s AND p.experiment_id = %s", email, experiment_id)
    assert grants == [("MANAGE",)]
    assert env.query(env.db_name, "SELECT name FROM experiments WHERE experiment_id = %s",
                     int(experiment_id)) == [(name,)]


def test_admin_token_provisions_an_admin(env: PgSso) -> None:
    groups = env.call("alice", "GET", f"{API}/permissions/groups/details")
    assert groups.status_code == 200, groups.text
    email = env.realm.users["alice"].email
    assert env.query(env.auth_name, "SELECT is_admin FROM users WHERE username = %s",
                     email) == [(True,)]
