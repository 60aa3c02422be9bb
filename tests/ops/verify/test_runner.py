"""`verify` (runner.run, and the command) against real platforms: an SSO platform (PostgreSQL,
S3, Keycloak, SSO server) passes every step as a temporary mlflow-user and leaves nothing behind;
an injected fault fails the right step while clean-up still runs; embedded defaults (no auth)
skip only the auth steps; the CLI prints a table or JSON, exits 1 on a failed step and 2 on bad
input, and never prints a secret. The embedded-defaults platform (`open_platform`) is in
conftest.py, shared with test_target.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import typer
import yaml
from typer.testing import CliRunner

from harness.keycloak import KeycloakServer, admin_client
from harness.platforms import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    SsoPlatform,
    bucket_deleted,
    sso_platform,
)
from harness.ports import free_port
from harness.postgres import PostgresServer
from harness.s3 import S3Server
from mlflow_stack.cli.verify_cmd import verify as verify_command
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.verify import access, model_registry, runner, steps
from mlflow_stack.ops.verify.credentials import TEMP_PREFIX

pytestmark = pytest.mark.integration
AUTH_STEPS = {steps.TOKEN, steps.ROLE, steps.ANONYMOUS}
SMALL = 2 * 1000 * 1000  # artifact size where the size does not matter to the test


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory, keycloak: KeycloakServer,
         postgres_server: PostgresServer, s3_server: S3Server) -> Iterator[SsoPlatform]:
    with sso_platform(tmp_path_factory.mktemp("verify"), "verify", keycloak, postgres_server,
                      s3_server) as p:
        yield p


def by_step(results: list[steps.StepResult]) -> dict[str, steps.StepResult]:
    assert [r.step for r in results] == list(steps.STEPS)
    return {r.step: r for r in results}


def experiment_name(results: dict[str, steps.StepResult]) -> str:
    match = re.search(r"experiment (mlflow-verify-[0-9a-f]+)", results[steps.EXPERIMENT].detail)
    assert match, results[steps.EXPERIMENT]
    return match.group(1)


def temp_users(p: SsoPlatform) -> list[str]:
    users = admin_client(p.keycloak, p.realm).get_users({"search": TEMP_PREFIX})
    return [u["username"] for u in users]


def assert_cleaned_up(p: SsoPlatform, results: dict[str, steps.StepResult],
                      bucket_existed: bool = True) -> None:
    """Checked behind MLflow's back: the database, the bucket and the realm."""
    name = experiment_name(results)
    with psycopg.connect(p.postgres.dsn(p.settings.database.name)) as conn:
        rows = conn.execute("SELECT experiment_id, lifecycle_stage FROM experiments "
                            "WHERE name = %s", (name,)).fetchall()
        assert len(rows) == 1 and rows[0][1] == "deleted", rows
        experiment_id = rows[0][0]
        assert conn.execute("SELECT count(*) FROM registered_models WHERE name = %s",
                            (name,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM model_versions WHERE name = %s",
                            (name,)).fetchone() == (0,)
        for table in ("registered_models", "model_versions"):  # the prompt
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE name = %s",
                                (f"{name}-prompt",)).fetchone() == (0,)
        for table in ("trace_info", "spans"):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE experiment_id = %s",
                                (experiment_id,)).fetchone() == (0,), table
        runs = conn.execute("SELECT lifecycle_stage FROM runs WHERE experiment_id = %s",
                            (experiment_id,)).fetchall()
        assert runs and {r[0] for r in runs} == {"deleted"}
        models = conn.execute("SELECT lifecycle_stage FROM logged_models "
                              "WHERE experiment_id = %s", (experiment_id,)).fetchall()
        assert {m[0] for m in models} <= {"deleted"}, models
    assert temp_users(p) == []
    # The artifacts are gone from the bucket (the server's deletes reach the JuiceFS gateway:
    # server/s3_repository.py adds the Content-MD5 it requires).
    listing = p.s3.client().list_objects_v2(Bucket=p.settings.artifacts.bucket)
    # (The gateway lists a file system: emptied folders stay as `dir/` keys.)
    keys = [o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith("/")]
    assert [k for k in keys if f"/{experiment_id}/" in f"/{k}"] == []
    if bucket_existed:
        assert "left behind" not in results[steps.CLEANUP].detail


# --------------------------------------------------------------------------------------------
# library


def test_healthy_sso_platform_passes_every_step_and_cleans_up(plat: SsoPlatform) -> None:
    seen: list[str] = []
    results = by_step(runner.run(plat.url, plat.settings,
                                 on_step=lambda r: seen.append(r.step), env={}))
    assert seen == list(steps.STEPS), "each step is reported as it finishes"
    assert {s: r.status for s, r in results.items()} == dict.fromkeys(steps.STEPS, "ok"), \
        steps.failed(list(results.values()))
    assert "temporary Keycloak user mlflow-verify-" in results[steps.TOKEN].detail
    assert "20 MB" in results[steps.ARTIFACT].detail
    assert "answered 403" in results[steps.ROLE].detail
    assert "answered 401" in results[steps.ANONYMOUS].detail
    assert "-prompt version 1 registered and loaded" in results[steps.PROMPT].detail
    assert "2 spans read back" in results[steps.TRACE].detail
    assert "Keycloak user mlflow-verify-" in results[steps.CLEANUP].detail
    assert "prompt mlflow-verify-" in results[steps.CLEANUP].detail
    assert "trace deleted" in results[steps.CLEANUP].detail
    assert_cleaned_up(plat, results)


def test_the_admin_only_call_is_allowed_to_an_admin(plat: SsoPlatform) -> None:
    """The role check could fail: the same call succeeds with an mlflow-admin token."""
    admin = {"Authorization": f"Bearer {plat.token()}"}
    response = httpx.get(f"{plat.url}{access.ADMIN_ONLY_PATH}", headers=admin, timeout=30)
    assert response.status_code == 200, response.text
    assert httpx.get(f"{plat.url}{access.CURRENT_USER_PATH}", headers=admin,
                     timeout=30).json()["is_admin"] is True
    assert httpx.get(f"{plat.url}{access.ADMIN_ONLY_PATH}", timeout=30).status_code in (401, 403)


def test_deleted_bucket_fails_the_artifact_steps_and_still_cleans_up(plat: SsoPlatform) -> None:
    with bucket_deleted(plat.s3, plat.settings.artifacts.bucket):
        results = by_step(runner.run(plat.url, plat.settings, artifact_bytes=SMALL, env={}))
    status = {s: r.status for s, r in results.items()}
    assert status[steps.ARTIFACT] == "failed"
    assert results[steps.ARTIFACT].detail.startswith("upload: HTTP 500 from the server")
    assert status[steps.MODEL] == "failed"
    assert status[steps.REGISTER] == status[steps.ALIAS_STAGE] == "skipped"
    assert "log model" in results[steps.REGISTER].detail
    for step in (steps.HEALTH, steps.TOKEN, steps.EXPERIMENT, steps.RUN, steps.ROLE,
                 steps.ANONYMOUS, steps.CLEANUP):
        assert status[step] == "ok", results[step]
    assert steps.failed(list(results.values())) == [results[steps.ARTIFACT],
                                                     results[steps.MODEL]]
    # The server could not delete from a bucket that was gone: the clean-up says so.
    assert "left behind: artifacts at" in results[steps.CLEANUP].detail
    assert_cleaned_up(plat, results, bucket_existed=False)


def test_failing_step_after_the_user_exists_still_removes_it(
        plat: SsoPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that raises something unexpected is a failed step; the temporary user goes."""
    def boom(v: object) -> str:
        raise RuntimeError("injected")

    monkeypatch.setattr(model_registry, "alias_and_stage", boom)
    results = by_step(runner.run(plat.url, plat.settings, artifact_bytes=SMALL, env={}))
    assert results[steps.ALIAS_STAGE].status == "failed"
    assert results[steps.ALIAS_STAGE].detail == "RuntimeError: injected"
    assert results[steps.CLEANUP].status == "ok", results[steps.CLEANUP]
    assert_cleaned_up(plat, results)


def test_url_with_an_admins_credentials_skips_the_role_check(plat: SsoPlatform,
                                                               tmp_path: Path) -> None:
    """--url and the keycloak plugin's variables: the admin verifies; refusal needs a non-admin."""
    env = {"MLFLOW_TRACKING_AUTH": "keycloak",
           "MLFLOW_KEYCLOAK_TOKEN_URL": f"{plat.keycloak.issuer(plat.realm)}"
                                        "/protocol/openid-connect/token",
           "MLFLOW_KEYCLOAK_CLIENT_ID": plat.settings.auth.client_id,
           "MLFLOW_CLIENT_SECRET": plat.client_secret,
           "MLFLOW_AUTH_USERNAME": ADMIN_USER, "MLFLOW_AUTH_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_KEYCLOAK_TOKEN_CACHE": str(tmp_path / "tokens.json")}
    results = by_step(runner.run(plat.url, None, artifact_bytes=SMALL, env=env))
    status = {s: r.status for s, r in results.items()}
    assert status == {**dict.fromkeys(steps.STEPS, "ok"), steps.ROLE: "skipped"}, results
    assert "is an MLflow admin" in results[steps.ROLE].detail
    assert "tkadmin" in results[steps.TOKEN].detail
    assert_cleaned_up(plat, results)


def test_url_without_credentials_fails_at_the_token(plat: SsoPlatform) -> None:
    results = by_step(runner.run(plat.url, None, env={}))
    assert results[steps.TOKEN].status == "failed"
    assert "HTTP 401" in results[steps.TOKEN].detail
    assert "mlflow-stack login" in results[steps.TOKEN].detail
    after = [s for s in steps.STEPS if s not in (steps.HEALTH, steps.TOKEN, steps.CLEANUP)]
    assert all(results[s].status == "skipped" for s in after), results
    assert results[steps.CLEANUP].status == "ok"


def test_auth_none_platform_skips_only_the_auth_steps(
        open_platform: tuple[Settings, StateDir]) -> None:
    settings, state = open_platform
    results = by_step(runner.run(settings.local_url, settings, env={}))
    for step, r in results.items():
        assert r.status == ("skipped" if step in AUTH_STEPS else "ok"), r
    assert "auth.provider is none" in results[steps.ROLE].detail
    assert "20 MB" in results[steps.ARTIFACT].detail
    artifacts = [p for p in state.artifacts_dir.rglob("*") if p.is_file()]
    assert artifacts == [], "clean-up removes the artifacts"


def test_unreachable_server_fails_health_and_skips_the_rest() -> None:
    results = by_step(runner.run(f"http://127.0.0.1:{free_port()}", Settings(), env={}))
    assert results[steps.HEALTH].status == "failed"
    assert "does not answer" in results[steps.HEALTH].detail
    assert all(r.status == "skipped" for s, r in results.items()
               if s not in (steps.HEALTH, steps.CLEANUP))
    assert results[steps.CLEANUP].detail == "nothing to remove"


# --------------------------------------------------------------------------------------------
# CLI (the command on its own Typer app, errors mapped as mlflow-stack's entry point does)


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    app = typer.Typer()
    app.command()(verify_command)
    result = CliRunner().invoke(app, args, env=env)
    exc = result.exception
    if isinstance(exc, StackError):
        return exc.exit_code, result.stdout, result.stderr + exc.message + (exc.hint or "")
    assert exc is None or isinstance(exc, SystemExit), result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """No credentials, dotenv file or state dir of the machine."""
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_AUTH", "MLFLOW_KEYCLOAK_TOKEN_URL",
                 "MLFLOW_AUTH_USERNAME", "MLFLOW_AUTH_PASSWORD", "MLFLOW_CLIENT_SECRET",
                 "ADMIN_PASSWORD", "KEYCLOAK_ADMIN_PASSWORD", "MLFLOW_STACK_HOME",
                 "MLFLOW_STACK_ENV_FILE", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield {}


def write_config(p: SsoPlatform, path: Path) -> Path:
    path.write_text(yaml.safe_dump(p.settings.model_dump(mode="json")))
    return path


def test_cli_table_and_json_on_the_sso_platform(plat: SsoPlatform, cli_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    config = write_config(plat, tmp_path / "platform.yaml")
    env = {"KEYCLOAK_ADMIN_PASSWORD": plat.keycloak.admin_password}
    code, stdout, stderr = invoke(["-c", str(config), "--state-dir", str(plat.state.root)], env)
    assert code == 0, stdout + stderr
    for step in steps.STEPS:
        assert step in stdout
    assert f"0 failed, 0 skipped, {len(steps.STEPS)} ok" in stdout
    assert f"verifying {plat.url} (local server of" in stderr
    secrets = [plat.keycloak.admin_password, plat.client_secret, plat.postgres.password,
               plat.s3.secret_key]
    code, stdout, stderr = invoke(["-c", str(config), "--state-dir", str(plat.state.root),
                                   "--output", "json"], env)
    assert code == 0, stdout + stderr
    data = json.loads(stdout)
    assert data["ok"] is True and data["url"] == plat.url
    assert [s["step"] for s in data["steps"]] == list(steps.STEPS)
    assert {s["status"] for s in data["steps"]} == {"ok"}
    assert set(data["steps"][0]) == {"step", "status", "detail", "seconds"}
    for secret in secrets:
        assert secret not in stdout + stderr
    assert "eyJ" not in stdout + stderr, "no token in the output"
    assert temp_users(plat) == []


def test_cli_exit_1_on_a_failed_step(plat: SsoPlatform, cli_env: dict[str, str]) -> None:
    code, stdout, _ = invoke(["--url", plat.url])
    assert code == 1
    assert f"1 failed, {len(steps.STEPS) - 3} skipped, 2 ok" in stdout
    code, stdout, _ = invoke(["--url", plat.url, "-o", "json"])
    assert code == 1
    data = json.loads(stdout)
    assert data["ok"] is False
    token = {s["step"]: s for s in data["steps"]}[steps.TOKEN]
    assert token["status"] == "failed" and "requires a token" in token["detail"]


def test_cli_exit_2_on_bad_input(cli_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("server:\n  port: 5050\n")
    code, _, message = invoke(["-c", "c.yaml", "--url", "http://127.0.0.1:5050"])
    assert code == 2 and "--config/-c or --url, not both" in message
    code, _, message = invoke(["--state-dir", str(tmp_path / "none")])
    assert code == 2 and "no local server is running" in message and "--url" in message
    code, _, message = invoke(["--url", "127.0.0.1:5000"])
    assert code == 2 and "--url" in message
    code, _, message = invoke(["-c", "missing.yaml"])
    assert code == 2 and "missing.yaml" in message


def test_cli_auth_none_platform_via_state_dir(open_platform: tuple[Settings, StateDir],
                                              cli_env: dict[str, str]) -> None:
    _, state = open_platform
    code, stdout, _ = invoke(["--state-dir", str(state.root), "-o", "json"])
    assert code == 0, stdout
    statuses = {s["step"]: s["status"] for s in json.loads(stdout)["steps"]}
    assert {s for s, v in statuses.items() if v == "skipped"} == AUTH_STEPS
