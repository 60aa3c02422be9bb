"""The one builder of the server's command line and environment (local and Kubernetes)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pydantic
import pytest
from mlflow.server.security_utils import is_allowed_host_header
from pydantic import SecretStr

from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.launch.command import build_server_launch
from mlflow_stack.launch.spec import ServerPaths

PATHS = ServerPaths(data_dir=PurePosixPath("/state/data"),
                    artifacts_dir=PurePosixPath("/state/artifacts"),
                    prometheus_dir=PurePosixPath("/state/run/prometheus"),
                    tmp_dir=PurePosixPath("/state/run/tmp"),
                    audit_log="/state/logs/audit.log")
SECRETS = Secrets.model_construct(admin_password=SecretStr("pg-secret-1"),
                                  s3_access_key_id=SecretStr("AKIA-1"),
                                  s3_secret_access_key=SecretStr("s3-secret-1"))


def arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_embedded_defaults() -> None:
    launch = build_server_launch(Settings(), PATHS)
    argv, env = launch.argv, launch.env_dict()
    assert argv[:2] == ["mlflow-stack-server", "server"]
    # One import of the app, forked into uvicorn h11 workers (server/gunicorn_conf.py).
    assert arg(argv, "--gunicorn-opts") == "-c python:mlflow_stack.server.gunicorn_conf"
    assert arg(argv, "--host") == "127.0.0.1" and arg(argv, "--port") == "5000"
    assert arg(argv, "--workers") == "4"  # fits the 1Gi default budget
    assert arg(argv, "--backend-store-uri") == "sqlite:////state/data/mlflow.db"
    assert arg(argv, "--artifacts-destination") == "/state/artifacts"
    assert "--serve-artifacts" in argv and arg(argv, "--app-name") == "mlflow-stack"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["TMPDIR"] == "/state/run/tmp"
    assert "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS" not in env  # no public host: MLflow's defaults
    assert env["MLFLOW_STACK_MAX_REQUEST_BODY"] == str(16 * 2**20)  # read by the SSO app


def test_loopback_hosts_are_allowed_with_the_servers_port_only() -> None:
    """MLflow matches allowed hosts with fnmatch: `127.0.0.1:*` let `127.0.0.1:5000@evil` in."""
    settings = Settings.model_validate({"server": {"port": 5123, "max_request_body": "1Mi"}})
    env = build_server_launch(settings, PATHS).env_dict()
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert hosts == ["localhost", "localhost:5123", "127.0.0.1", "127.0.0.1:5123"]
    for host in ("127.0.0.1:5123", "localhost:5123", "127.0.0.1"):
        assert is_allowed_host_header(hosts, host)
    for host in ("127.0.0.1:5123@evil.example", "127.0.0.1:evil", "127.0.0.1:1", "localhost:80"):
        assert not is_allowed_host_header(hosts, host), host
    assert env["MLFLOW_STACK_MAX_REQUEST_BODY"] == str(2**20)


def test_max_request_body_must_leave_room_for_ordinary_calls() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_request_body"):
        Settings.model_validate({"server": {"max_request_body": "1Ki"}})


def test_postgres_s3_and_public_host() -> None:
    settings = Settings.model_validate({
        "domain": "example.com",
        "database": {"backend": "postgresql", "host": "db.example.com", "name": "mlflow",
                     "user": "admin"},
        "artifacts": {"backend": "s3", "bucket": "mlflow", "endpoint_url": "https://s3.example.com"},
    }).model_copy(update={"secrets": SECRETS})
    launch = build_server_launch(settings, PATHS, bind_host="0.0.0.0",
                                 internal_hosts=["mlflow.mlflow.svc"])
    argv, env = launch.argv, launch.env_dict()
    assert arg(argv, "--host") == "0.0.0.0"
    uri = arg(argv, "--backend-store-uri")
    assert uri == "postgresql://admin@db.example.com:5432/mlflow?sslmode=prefer"
    assert arg(argv, "--artifacts-destination") == "s3://mlflow/artifacts"
    # Secrets reach the process through its environment only, as Secret references on k8s.
    assert "pg-secret-1" not in " ".join(argv) and "s3-secret-1" not in " ".join(argv)
    assert env["PGPASSWORD"] == "pg-secret-1"
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3-secret-1"
    assert launch.secret_names() >= {"PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.example.com"
    assert "MLFLOW_S3_IGNORE_TLS" not in env  # TLS verified unless turned off
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert hosts[0] == "mlflow.example.com" and "mlflow.mlflow.svc" in hosts
    assert env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] == "https://mlflow.example.com"


def test_job_runner_and_workers_follow_settings() -> None:
    settings = Settings.model_validate({"server": {"job_execution": True, "workers": 5}})
    launch = build_server_launch(settings, PATHS)
    assert arg(launch.argv, "--workers") == "5"
    assert launch.env_dict()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_secret_ref_repr_hides_value() -> None:
    settings = Settings.model_validate({
        "database": {"backend": "postgresql", "host": "db"}}).model_copy(
        update={"secrets": SECRETS})
    launch = build_server_launch(settings, PATHS)
    assert "pg-secret-1" not in repr(launch)


def test_what_mlflow_turns_on_by_itself_is_off_unless_asked() -> None:
    """The Assistant, the AI Gateway and usage telemetry (see server/surfaces.py); the pod gets
    the same variables."""
    env = build_server_launch(Settings(), PATHS).env_dict()
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["MLFLOW_ENABLE_AI_GATEWAY"] == "false"
    assert env["MLFLOW_STACK_ASSISTANT"] == "false"
    assert env["MLFLOW_ENABLE_REMOTE_ASSISTANT"] == "false"
    assert env["MLFLOW_ENABLE_ASSISTANT_SANDBOX"] == "true"  # its shell never on the host
    on = Settings.model_validate({"server": {"assistant": True, "ai_gateway": True,
                                             "telemetry": True}})
    env = build_server_launch(on, PATHS).env_dict()
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "false"
    assert env["MLFLOW_ENABLE_AI_GATEWAY"] == "true"
    assert env["MLFLOW_STACK_ASSISTANT"] == "true"
    assert env["MLFLOW_ENABLE_REMOTE_ASSISTANT"] == "false"  # MLflow's remote mode stays off
    assert "MLFLOW_ENABLE_ASSISTANT_SANDBOX" not in env  # MLflow's own default


def test_workspaces_switch_reaches_mlflow_and_the_sso_layer() -> None:
    """server.workspaces: MLflow's flag, and the one env switch its workers and mlflow-oidc-auth
    both read (the pod gets the same launch)."""
    off = build_server_launch(Settings(), PATHS)
    assert "--enable-workspaces" not in off.argv
    assert off.env_dict()["MLFLOW_ENABLE_WORKSPACES"] == "false"
    on = build_server_launch(Settings.model_validate({"server": {"workspaces": True}}), PATHS)
    assert "--enable-workspaces" in on.argv
    assert on.env_dict()["MLFLOW_ENABLE_WORKSPACES"] == "true"

