"""backup -> wipe -> restore into an empty platform reproduces experiments, runs, metrics,
registered models and artifacts exactly (counts and checksums compared)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.reference_client import run_reference_client
from harness.s3 import S3Server
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.errors import ConfigError
from mlflow_stack.local import backup as backups
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration


def artifact_files(manifest: backups.Manifest) -> dict[str, Any]:
    return {k: v for k, v in manifest.files.items() if k.startswith("artifacts/")}


def round_trip(source: Settings, target: Settings, tmp_path: Path) -> None:
    src_state, dst_state = StateDir(tmp_path / "src"), StateDir(tmp_path / "dst")
    up = platform.up(source, src_state, NullProgress())
    try:
        written = run_reference_client("write", up.record.url)
        # Backed up while the server runs.
        manifest = backups.backup(source, src_state, tmp_path / "backup", NullProgress())
    finally:
        platform.down(src_state)
    assert manifest.counts["experiments"] >= 2  # Default + my-experiment
    assert manifest.counts["runs"] == 1 and manifest.counts["metrics"] == 2
    assert manifest.counts["registered_models"] == 1 and manifest.counts["model_versions"] == 1
    assert any(k.endswith("notes.txt") for k in artifact_files(manifest))
    assert any(k.endswith("MLmodel") for k in artifact_files(manifest))

    result = backups.restore(target, dst_state, tmp_path / "backup", NullProgress())
    assert result.counts == manifest.counts

    up = platform.up(target, dst_state, NullProgress())
    try:
        # params, metrics, model, alias, artifact
        checked = run_reference_client("check", up.record.url)
    finally:
        platform.down(dst_state)
    assert (checked["run_id"], checked["version"]) == (written["run_id"], written["version"])
    # A backup of the restored platform holds byte-identical artifacts.
    again = backups.backup(target, dst_state, tmp_path / "again", NullProgress())
    assert artifact_files(again) == artifact_files(manifest)
    assert again.counts == manifest.counts

    # Restoring again into the now non-empty platform is refused, and nothing changes.
    with pytest.raises(ConfigError, match="already holds data"):
        backups.restore(target, dst_state, tmp_path / "backup", NullProgress())
    assert backups.count_rows(target, dst_state) == manifest.counts


def test_embedded_defaults_round_trip(tmp_path: Path) -> None:
    settings = Settings.model_validate({"server": {"port": free_port()}})
    round_trip(settings, settings, tmp_path)


def test_postgres_and_s3_round_trip(
    tmp_path: Path, postgres_server: PostgresServer, s3_server: S3Server
) -> None:
    def settings(db: str, bucket: str) -> Settings:
        return Settings.model_validate({
            "server": {"port": free_port()},
            "database": {"backend": "postgresql", "host": "127.0.0.1",
                         "port": postgres_server.port, "name": db,
                         "user": postgres_server.superuser},
            "artifacts": {"backend": "s3", "bucket": bucket,
                          "endpoint_url": s3_server.endpoint_url},
        }).model_copy(update={"secrets": Secrets.model_construct(
            admin_password=SecretStr(postgres_server.password),
            s3_access_key_id=SecretStr(s3_server.access_key),
            s3_secret_access_key=SecretStr(s3_server.secret_key))})

    # The "wiped" platform: a new, empty database and bucket.
    round_trip(settings("mlflow_backup_src", "backup-src"),
               settings("mlflow_backup_dst", "backup-dst"), tmp_path)


def test_tampered_backup_is_refused_before_any_change(tmp_path: Path) -> None:
    settings = Settings.model_validate({"server": {"port": free_port()}})
    state = StateDir(tmp_path / "src")
    up = platform.up(settings, state, NullProgress())
    try:
        run_reference_client("write", up.record.url)
    finally:
        platform.down(state)
    backups.backup(settings, state, tmp_path / "b", NullProgress())
    victim = next((tmp_path / "b" / "artifacts").rglob("notes.txt"))
    victim.write_text("changed\n")
    target = StateDir(tmp_path / "dst")
    with pytest.raises(backups.BackupError, match="checksum differs"):
        backups.restore(settings, target, tmp_path / "b", NullProgress())
    assert not (target.data_dir / "mlflow.db").exists()


def test_sso_configured_but_never_run_backs_up_the_metadata_alone(tmp_path: Path) -> None:
    """SQLite + SSO in the config, but no SSO database yet (the server never ran with SSO,
    e.g. `up` backing up an old schema first): the backup holds what exists and says so."""
    plain = Settings.model_validate({"server": {"port": free_port()}})
    state = StateDir(tmp_path / "state")
    platform.up(plain, state, NullProgress())
    platform.down(state)
    sso = Settings.model_validate({"server": {"port": free_port()}, "auth": {
        "provider": "keycloak", "keycloak_url": "https://keycloak.example.test"}})
    assert not (state.data_dir / "auth.db").exists()
    manifest = backups.backup(sso, state, tmp_path / "b", NullProgress(), artifacts=False)
    assert not manifest.sso and "metadata.sqlite" in manifest.files
    assert "sso.sqlite" not in manifest.files
    # Restored into SQLite + SSO: the metadata comes back; the SSO database is created later.
    target = StateDir(tmp_path / "target")
    result = backups.restore(sso, target, tmp_path / "b", NullProgress())
    assert result.counts == manifest.counts


def test_replace_keeps_the_current_postgres_database_aside(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """restore --replace (the way back after a failed upgrade): the backup's data comes back and
    the database it replaces is renamed, never dropped; a database in use is refused."""
    name = f"mlflow_replace_{uuid.uuid4().hex[:6]}"
    settings = Settings.model_validate({
        "server": {"port": free_port()},
        "database": {"backend": "postgresql", "host": "127.0.0.1",
                     "port": postgres_server.port, "name": name,
                     "user": postgres_server.superuser},
    }).model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr(postgres_server.password))})
    state = StateDir(tmp_path / "state")
    url = platform.up(settings, state, NullProgress()).record.url
    try:
        create = f"{url}/api/2.0/mlflow/experiments/create"
        assert httpx.post(create, json={"name": "before"}, timeout=30).status_code == 200
        manifest = backups.backup(settings, state, tmp_path / "b", NullProgress(),
                                  artifacts=False)
        assert httpx.post(create, json={"name": "after"}, timeout=30).status_code == 200
    finally:
        platform.down(state)

    def names(db: str) -> set[str]:
        with psycopg.connect(postgres_server.dsn(db)) as conn:
            return {str(r[0]) for r in conn.execute("SELECT name FROM experiments")}

    with pytest.raises(ConfigError, match="already holds data"):
        backups.restore(settings, state, tmp_path / "b", NullProgress())
    with psycopg.connect(postgres_server.dsn(name)), \
            pytest.raises(ConfigError, match=f"database {name} is in use"):
        backups.restore(settings, state, tmp_path / "b", NullProgress(), replace=True)
    assert "after" in names(name), "a refused replace changes nothing"

    result = backups.restore(settings, state, tmp_path / "b", NullProgress(), replace=True)
    assert result.counts == manifest.counts
    assert "before" in names(name) and "after" not in names(name)
    with psycopg.connect(postgres_server.dsn("postgres")) as conn:
        (aside,) = [str(r[0]) for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}_replaced_%",))]
    assert {"before", "after"} <= names(aside)


def test_replace_is_all_or_nothing(postgres_server: PostgresServer) -> None:
    """The SSO database in use: the metadata database, already renamed, is put back."""
    from mlflow_stack.components import postgres

    name = f"mlflow_aon_{uuid.uuid4().hex[:6]}"
    settings = Settings.model_validate({
        "database": {"backend": "postgresql", "host": "127.0.0.1",
                     "port": postgres_server.port, "name": name, "auth_name": f"{name}_auth",
                     "user": postgres_server.superuser},
        "auth": {"provider": "keycloak", "keycloak_url": "https://keycloak.example.test"},
    }).model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr(postgres_server.password))})
    postgres.ensure_database(settings)
    postgres.ensure_database(settings, f"{name}_auth")
    with psycopg.connect(postgres_server.dsn(f"{name}_auth")), \
            pytest.raises(ConfigError, match=f"database {name}_auth is in use"):
        backups._move_databases_aside(settings, StateDir(Path("/nonexistent")), sso=True)
    with psycopg.connect(postgres_server.dsn("postgres")) as conn:
        present = {str(r[0]) for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}%",))}
    assert present == {name, f"{name}_auth"}
