"""The SSO part of the server launch: env names, secrets kept out of argv, DB URIs."""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import SecretStr

from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.launch.command import PLAIN_APP, build_server_launch
from mlflow_stack.launch.spec import ServerPaths

PATHS = ServerPaths(PurePosixPath("/s/data"), PurePosixPath("/s/art"), PurePosixPath("/s/p"),
                    PurePosixPath("/s/t"), "/s/logs/audit.log")


def _settings(**extra: object) -> Settings:
    data: dict[str, object] = {"auth": {"provider": "keycloak",
                                        "keycloak_url": "https://kc.example.com"},
                               "domain": "example.com", **extra}
    return Settings.model_validate(data).model_copy(update={"secrets": Secrets.model_construct(
        oidc_client_secret=SecretStr("client-s3cret"), secret_key=SecretStr("key-s3cret"),
        admin_password=SecretStr("pg-s3cret"))})


def test_keycloak_env_and_secrets() -> None:
    launch = build_server_launch(_settings(), PATHS)
    env = {v.name: v for v in launch.env}
    assert launch.argv[launch.argv.index("--app-name") + 1] == "mlflow-stack-sso"
    plain = launch.env_dict()
    assert plain["OIDC_ISSUER"] == "https://kc.example.com/realms/thinkube"
    assert plain["OIDC_DISCOVERY_URL"].endswith("/realms/thinkube/.well-known/openid-configuration")
    assert plain["OIDC_REDIRECT_URI"] == "https://mlflow.example.com/callback"
    assert plain["OIDC_AUDIENCE"] == "mlflow"
    assert plain["OIDC_GROUP_NAME"] == "mlflow-user"
    assert plain["OIDC_ADMIN_GROUP_NAME"] == "mlflow-admin"
    assert plain["OIDC_GROUP_DETECTION_PLUGIN"] == "mlflow_keycloak_groups"
    assert plain["OIDC_PROVISION_ON_BEARER_AUTH"] == "true"
    assert plain["OIDC_ALEMBIC_VERSION_TABLE"] != "alembic_version"
    assert plain["OIDC_USERS_DB_URI"] == "sqlite:////s/data/auth.db"
    assert plain["SESSION_COOKIE_SECURE"] == "true"
    assert plain["DEFAULT_LANDING_PAGE_IS_PERMISSIONS"] == "false"
    assert plain["PERMISSION_CACHE_TTL_SECONDS"] == "30"
    assert plain["WORKSPACE_CACHE_TTL_SECONDS"] == "30"  # workspace grants: the same bound
    assert plain["MLFLOW_ENABLE_WORKSPACES"] == "false"
    assert (plain["AUDIT_LOG_ENABLED"], plain["MLFLOW_STACK_AUDIT_LOG"]) == (
        "true", "/s/logs/audit.log")
    secret = env["OIDC_CLIENT_SECRET"].secret
    assert secret is not None and (secret.secret_name, secret.key) == (
        "oauth2-proxy-secret", "client-secret")
    assert {"OIDC_CLIENT_SECRET", "SECRET_KEY"} <= launch.secret_names()
    joined = " ".join(launch.argv) + repr(launch.env)
    assert "s3cret" not in joined


def test_auth_db_on_postgres_has_no_password() -> None:
    s = _settings(database={"backend": "postgresql", "host": "db", "auth_name": "mlflow_auth"},
                  server={"trusted_proxies": ["10.0.0.0/8"]})
    plain = build_server_launch(s, PATHS).env_dict()
    assert plain["OIDC_USERS_DB_URI"].startswith("postgresql://admin@db:5432/mlflow_auth?")
    assert "s3cret" not in plain["OIDC_USERS_DB_URI"]
    assert plain["PGPASSWORD"] == "pg-s3cret"
    assert plain["TRUSTED_PROXIES"] == "10.0.0.0/8"


def test_no_sso_adds_no_oidc() -> None:
    launch = build_server_launch(Settings(), PATHS)
    # MLflow's own app through the platform's (server/plain_app.py), nothing of the SSO layer.
    assert launch.argv[launch.argv.index("--app-name") + 1] == PLAIN_APP
    assert not any(v.name.startswith("OIDC_") for v in launch.env)



def test_workspaces_on_with_sso() -> None:
    s = _settings(server={"workspaces": True}, auth={
        "provider": "keycloak", "keycloak_url": "https://kc.example.com",
        "permission_cache_seconds": 5})
    launch = build_server_launch(s, PATHS)
    plain = launch.env_dict()
    assert "--enable-workspaces" in launch.argv
    assert plain["MLFLOW_ENABLE_WORKSPACES"] == "true"  # read by mlflow-oidc-auth too
    assert plain["WORKSPACE_CACHE_TTL_SECONDS"] == "5"
