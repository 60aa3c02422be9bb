"""A whole local platform for integration tests: SSO server on real PostgreSQL, S3 and Keycloak.

Provisioned the way a user does it: a realm with one admin user, the Keycloak system applied
(roles, client, mappers, the admin's role grant), then `platform.up`. One per test module (the
server takes ~15 s to start); each module passes its own name so databases and buckets don't
collide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import SecretStr

from mlflow_stack.components import keycloak as kc
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import apply_system
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

from .keycloak import KeycloakServer, create_realm, create_user, password_grant
from .ports import free_port
from .postgres import PostgresServer
from .s3 import S3Server

ADMIN_USER = "tkadmin"
ADMIN_PASSWORD = "tkadmin-pw"


@dataclass
class SsoPlatform:
    settings: Settings
    state: StateDir
    realm: str
    keycloak: KeycloakServer
    postgres: PostgresServer
    s3: S3Server

    @property
    def url(self) -> str:
        return self.settings.local_url

    @property
    def client_secret(self) -> str:
        return kc.client_secret(self.settings).get_secret_value()

    def token(self, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> str:
        """An access token of a realm user from the platform's own client (password grant)."""
        return str(password_grant(self.keycloak, self.realm, self.settings.auth.client_id,
                                  username, password, self.client_secret)["access_token"])


@contextmanager
def sso_platform(base_dir: Path, name: str, keycloak: KeycloakServer,
                 postgres: PostgresServer, s3: S3Server,
                 workers: int | None = None) -> Iterator[SsoPlatform]:
    """A running SSO platform named name (lower case letters/digits), stopped on exit."""
    realm = f"{name}-{uuid.uuid4().hex[:6]}"
    create_realm(keycloak, realm)
    create_user(keycloak, realm, ADMIN_USER, ADMIN_PASSWORD, f"{ADMIN_USER}@example.com")
    settings = Settings.model_validate({
        "server": {"port": free_port(), **({"workers": workers} if workers else {})},
        "database": {"backend": "postgresql", "host": "127.0.0.1", "port": postgres.port,
                     "name": f"mlflow_{name}", "auth_name": f"mlflow_{name}_auth",
                     "user": postgres.superuser},
        "artifacts": {"backend": "s3", "bucket": f"{name}-bucket",
                      "endpoint_url": s3.endpoint_url},
        "auth": {"provider": "keycloak", "keycloak_url": keycloak.url, "realm": realm,
                 "admin_username": keycloak.admin_user, "realm_admin_users": [ADMIN_USER]},
    }).model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr(postgres.password),
        keycloak_admin_password=SecretStr(keycloak.admin_password),
        s3_access_key_id=SecretStr(s3.access_key),
        s3_secret_access_key=SecretStr(s3.secret_key))})
    apply_system(kc.SYSTEM, settings)  # the real provisioning path
    state = StateDir(base_dir / "state")
    platform.up(settings, state, NullProgress())
    try:
        yield SsoPlatform(settings, state, realm, keycloak, postgres, s3)
    finally:
        platform.down(state)


@contextmanager
def bucket_deleted(s3: S3Server, bucket: str) -> Iterator[None]:
    """The artifact bucket emptied and deleted for the block, then created again (empty)."""
    client = s3.client()
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)
    try:
        yield
    finally:
        client.create_bucket(Bucket=bucket)


@contextmanager
def schema_stamped(dsn: str, revision: str) -> Iterator[None]:
    """The database's alembic_version set to `revision` for the block, then put back."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert row is not None
        conn.execute("UPDATE alembic_version SET version_num = %s", (revision,))
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (row[0],))


def s3_platform_settings(pg: PostgresServer, s3: S3Server, bucket: str,
                         database: str) -> Settings:
    """A platform without SSO on ``pg`` and ``s3`` (artifacts proxied to ``bucket``), on a
    free port, with the passwords and keys in its secrets."""
    settings = Settings.model_validate({
        "server": {"port": free_port()},
        "database": {"backend": "postgresql", "host": pg.host, "port": pg.port,
                     "user": pg.superuser, "name": database, "sslmode": "disable"},
        "artifacts": {"backend": "s3", "bucket": bucket, "endpoint_url": s3.endpoint_url},
    })
    return settings.model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr(pg.password),
        s3_access_key_id=SecretStr(s3.access_key),
        s3_secret_access_key=SecretStr(s3.secret_key),
    )})
