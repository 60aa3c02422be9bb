"""`mlflow-stack plan` / `apply` / `deploy` as a user runs them, against a real Keycloak,
PostgreSQL and S3: order, idempotence, exit codes, and the client secret never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from pydantic import SecretStr

from harness.keycloak import KeycloakServer, admin_client, create_realm, create_user
from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.s3 import S3Server
from mlflow_stack.components import keycloak as kc
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets

pytestmark = pytest.mark.integration

# The real entry point (main.run: exit codes, error printing).
CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]
TOKEN_PATH = r"^/realms/master/protocol/openid-connect/token$"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "ADMIN_PASSWORD", "KEYCLOAK_", "MLFLOW_STACK_"))}
    base["HOME"] = str(cwd)  # no ~/.env from the machine
    base["COLUMNS"] = "200"
    return subprocess.run([*CLI, *args], cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def new_realm(server: KeycloakServer) -> str:
    realm = f"cli-{uuid.uuid4().hex[:10]}"
    create_realm(server, realm)
    create_user(server, realm, "alice", "alice-pw-1", "alice@example.test")
    return realm


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def keycloak_config(server: KeycloakServer, realm: str, url: str | None = None) -> dict[str, Any]:
    return {"server": {"port": 5123},
            "auth": {"provider": "keycloak", "keycloak_url": url or server.url, "realm": realm,
                     "admin_username": server.admin_user, "realm_admin_users": ["alice"]}}


def kc_env(server: KeycloakServer) -> dict[str, str]:
    return {"KEYCLOAK_ADMIN_PASSWORD": server.admin_password}


def secret_of(server: KeycloakServer, realm: str) -> str:
    settings = Settings.model_validate(keycloak_config(server, realm)).model_copy(update={
        "secrets": Secrets.model_construct(
            keycloak_admin_password=SecretStr(server.admin_password))})
    return kc.client_secret(settings).get_secret_value()


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    data: dict[str, int] = json.loads(result.stdout)["summary"]
    return data


def test_plan_apply_deploy_keycloak_only(tmp_path: Path, keycloak: KeycloakServer) -> None:
    realm = new_realm(keycloak)
    config = write_config(tmp_path / "mlflow-stack.yaml", keycloak_config(keycloak, realm))
    env = kc_env(keycloak)

    text = ok(run_cli("plan", "-c", str(config), cwd=tmp_path, env=env))
    # 13 objects, and the realm's email attribute locked against self-service edits.
    assert "Plan: 13 to create, 1 to update, 0 to delete, 0 unchanged." in text.stdout
    assert "+ create" in text.stdout and "client mlflow mapper" in text.stdout
    assert "database.backend is not postgresql" in text.stdout
    assert f"keycloak: read realm {realm}" in text.stderr
    assert admin_client(keycloak, realm).get_client_id("mlflow") is None, "plan wrote"

    planned = json.loads(ok(run_cli("plan", "-o", "json", cwd=tmp_path, env=env)).stdout)
    assert [s["system"] for s in planned["systems"]] == [
        "keycloak", "postgres", "bucket", "kubernetes", "indexes", "permissions"]
    assert planned["systems"][0]["where"] == f"realm {realm} at {keycloak.url}"
    assert [s["skipped"] for s in planned["systems"][1:3]] == [
        "database.backend is not postgresql", "artifacts.backend is not s3"]
    assert "names no cluster" in planned["systems"][3]["skipped"]
    assert planned["systems"][4]["skipped"] == "database.backend is not postgresql"
    assert "no permissions.grants" in planned["systems"][5]["skipped"]
    assert planned["summary"] == {"create": 13, "update": 1, "delete": 0, "unchanged": 0}

    applied = ok(run_cli("apply", "-c", str(config), cwd=tmp_path, env=env))
    assert "Applied: 13 created, 1 updated, 0 deleted, 0 unchanged." in applied.stdout
    again = ok(run_cli("deploy", "-c", str(config), "-o", "json", cwd=tmp_path, env=env))
    assert summary(again) == {"create": 0, "update": 0, "delete": 0, "unchanged": 14}
    last = ok(run_cli("apply", cwd=tmp_path, env=env))
    assert "No changes: 14 object(s) already match the config." in last.stdout

    # Drift made by hand shows up in plan and goes away with apply.
    admin = admin_client(keycloak, realm)
    uid = admin.get_client_id("mlflow")
    assert uid is not None
    admin.update_client(uid, {"attributes": {"access.token.lifespan": "60"}})
    drift = ok(run_cli("plan", cwd=tmp_path, env=env))
    assert "attributes.access.token.lifespan: 60 → 3600" in drift.stdout
    assert "Plan: 0 to create, 1 to update" in drift.stdout
    ok(run_cli("apply", cwd=tmp_path, env=env))
    assert summary(ok(run_cli("plan", "-o", "json", cwd=tmp_path, env=env)))["update"] == 0

    secret = secret_of(keycloak, realm)
    for result in (text, applied, again, last, drift):
        assert secret not in result.stdout + result.stderr
    assert secret not in json.dumps(planned)


def test_all_three_systems_in_order(tmp_path: Path, keycloak: KeycloakServer,
                                    postgres_server: PostgresServer, s3_server: S3Server) -> None:
    realm = new_realm(keycloak)
    suffix = uuid.uuid4().hex[:8]
    data = keycloak_config(keycloak, realm)
    data["database"] = {"backend": "postgresql", "host": "127.0.0.1",
                        "port": postgres_server.port, "name": f"mlflow_{suffix}",
                        "auth_name": f"mlflow_auth_{suffix}", "user": postgres_server.superuser}
    data["artifacts"] = {"backend": "s3", "bucket": f"mlflow-{suffix}",
                         "endpoint_url": s3_server.endpoint_url}
    config = write_config(tmp_path / "all.yaml", data)
    env = {**kc_env(keycloak), "ADMIN_PASSWORD": postgres_server.password,
           "AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}

    planned = json.loads(ok(run_cli("plan", "-c", str(config), "-o", "json", cwd=tmp_path,
                                    env=env)).stdout)
    systems = {s["system"]: s for s in planned["systems"]}
    assert list(systems) == ["keycloak", "postgres", "bucket", "kubernetes", "indexes",
                             "permissions"]
    # No MLflow schema before a server or migration Job made it: the indexes wait for it.
    assert [(c["action"], c["target"]) for c in systems["indexes"]["changes"]] == [
        ("unchanged", f"indexes in mlflow_{suffix}")]
    # Nothing declared: the grants system stays out of the way.
    assert "no permissions.grants" in systems["permissions"]["skipped"]
    assert [(c["action"], c["target"]) for c in systems["postgres"]["changes"]] == [
        ("create", f"database mlflow_{suffix}"), ("create", f"database mlflow_auth_{suffix}")]
    assert [(c["action"], c["target"]) for c in systems["bucket"]["changes"]] == [
        ("create", f"bucket mlflow-{suffix}")]

    applied = ok(run_cli("apply", "-c", str(config), cwd=tmp_path, env=env))
    # Every system read first, then written in dependency order.
    steps = ["keycloak: read", "postgres: read", "bucket: read", "keycloak: create client",
             f"postgres: create database mlflow_{suffix}", "bucket: create bucket mlflow-"]
    order = [applied.stderr.index(step) for step in steps]
    assert order == sorted(order), applied.stderr
    assert "Applied: 16 created" in applied.stdout
    keycloak.sync_access_log()
    logins = keycloak.count_requests(TOKEN_PATH, "POST")
    again = ok(run_cli("apply", "-c", str(config), "-o", "json", cwd=tmp_path, env=env))
    assert summary(again) == {"create": 0, "update": 0, "delete": 0, "unchanged": 18}
    # Reading the client secret and reading the realm share one admin login.
    keycloak.sync_access_log()
    assert keycloak.count_requests(TOKEN_PATH, "POST") - logins == 1

    with psycopg.connect(postgres_server.dsn()) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert {f"mlflow_{suffix}", f"mlflow_auth_{suffix}"} <= names
    s3_server.client().head_bucket(Bucket=f"mlflow-{suffix}")
    secret = secret_of(keycloak, realm)
    for result in (applied, again):
        assert secret not in result.stdout + result.stderr
        assert postgres_server.password not in result.stdout + result.stderr


def test_later_system_refusing_stops_before_any_write(
    tmp_path: Path, keycloak: KeycloakServer, postgres_server: PostgresServer
) -> None:
    realm = new_realm(keycloak)
    data = keycloak_config(keycloak, realm)
    data["database"] = {"backend": "postgresql", "host": "127.0.0.1",
                        "port": postgres_server.port, "user": postgres_server.superuser}
    config = write_config(tmp_path / "c.yaml", data)
    env = {**kc_env(keycloak), "ADMIN_PASSWORD": "wrong-db-password"}
    result = run_cli("apply", "-c", str(config), cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"PostgreSQL at 127.0.0.1:{postgres_server.port}" in result.stderr
    assert "wrong password" in result.stderr and "Traceback" not in result.stderr
    admin = admin_client(keycloak, realm)
    assert admin.get_client_id("mlflow") is None, "Keycloak was changed before PostgreSQL failed"
    assert "mlflow-admin" not in {r["name"] for r in admin.get_realm_roles()}


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_errors_exit_codes(tmp_path: Path, keycloak: KeycloakServer, command: str) -> None:
    absent = f"absent-{uuid.uuid4().hex[:8]}"
    write_config(tmp_path / "missing.yaml", keycloak_config(keycloak, absent))
    result = run_cli(command, "-c", "missing.yaml", cwd=tmp_path, env=kc_env(keycloak))
    assert result.returncode == 2, result.stderr
    assert f"error: realm '{absent}' does not exist in Keycloak at {keycloak.url}" \
        in result.stderr

    realm = new_realm(keycloak)
    write_config(tmp_path / "ok.yaml", keycloak_config(keycloak, realm))
    result = run_cli(command, "-c", "ok.yaml", cwd=tmp_path,
                     env={"KEYCLOAK_ADMIN_PASSWORD": "not-it"})
    assert result.returncode == 1, result.stderr
    assert f"Keycloak at {keycloak.url} refused the admin login of user 'admin'" in result.stderr
    assert "not-it" not in result.stdout + result.stderr
    assert admin_client(keycloak, realm).get_client_id("mlflow") is None

    result = run_cli(command, "-c", "ok.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "KEYCLOAK_ADMIN_PASSWORD or ADMIN_PASSWORD" in result.stderr

    url = f"http://127.0.0.1:{free_port()}"
    write_config(tmp_path / "down.yaml", keycloak_config(keycloak, realm, url=url))
    result = run_cli(command, "-c", "down.yaml", cwd=tmp_path, env=kc_env(keycloak))
    assert result.returncode == 1
    assert f"error: Keycloak at {url} is unreachable: connection refused" in result.stderr
    for text in (result.stdout, result.stderr):
        assert "Traceback" not in text


def test_nothing_enabled(tmp_path: Path) -> None:
    result = ok(run_cli("plan", cwd=tmp_path))
    assert "Nothing to provision" in result.stdout
    data = json.loads(ok(run_cli("apply", "-o", "json", cwd=tmp_path)).stdout)
    assert all(s["skipped"] for s in data["systems"])


@pytest.mark.parametrize("command", ["plan", "apply", "deploy"])
def test_help_has_an_example(tmp_path: Path, command: str) -> None:
    result = ok(run_cli(command, "--help", cwd=tmp_path))
    assert "Example:" in result.stdout and "--output" in result.stdout
