"""The settings tree: defaults, constrained types, derived values, masking."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.config.types import quantity_bytes


def test_defaults_are_local_and_loopback() -> None:
    s = Settings()
    assert s.database.backend == "sqlite"
    assert s.artifacts.backend == "local"
    assert s.auth.provider == "none"
    assert s.server.bind_host == "127.0.0.1"
    assert s.server.port == 5000
    assert s.local_url == "http://127.0.0.1:5000"
    assert s.public_url == s.local_url
    assert s.server.job_execution is False


def test_public_host_defaults_from_domain() -> None:
    s = Settings.model_validate({"domain": "example.com"})
    assert s.public_hostname == "mlflow.example.com"
    assert s.public_url == "https://mlflow.example.com"
    s = Settings.model_validate({"domain": "example.com",
                                 "server": {"hostname": "experiments.example.com"}})
    assert s.public_url == "https://experiments.example.com"


@pytest.mark.parametrize(("limit", "workers"),
                         [("256Mi", 1), ("512Mi", 1), ("768Mi", 3), ("1Gi", 4), ("4Gi", 4)])
def test_workers_follow_memory_limit(limit: str, workers: int) -> None:
    s = Settings.model_validate({"server": {"memory_limit": limit}})
    assert s.effective_workers == workers


def test_explicit_workers_win() -> None:
    assert Settings.model_validate({"server": {"workers": 7}}).effective_workers == 7


@pytest.mark.parametrize("value", ["1Gi", "500Mi", "10G", "250m", "1.5Gi", "2", 3])
def test_valid_quantities(value: object) -> None:
    Settings.model_validate({"storage": {"capacity": value}})


@pytest.mark.parametrize("value", ["1Gb", "1 Gi", "Gi", "-1Gi", "1gi", ""])
def test_invalid_quantities(value: str) -> None:
    with pytest.raises(ValidationError, match="not a Kubernetes quantity"):
        Settings.model_validate({"storage": {"capacity": value}})


def test_quantity_bytes() -> None:
    assert quantity_bytes("1Gi") == 2**30
    assert quantity_bytes("500M") == 500e6
    assert quantity_bytes("250m") == 0.25


@pytest.mark.parametrize("bucket", ["ab", "My-Bucket", "a_b_c", "-abc", "abc-", "a..b", "1.2.3.4",
                                    "x" * 64])
def test_invalid_buckets(bucket: str) -> None:
    with pytest.raises(ValidationError, match="not a valid S3 bucket name"):
        Settings.model_validate({"artifacts": {"bucket": bucket}})


@pytest.mark.parametrize("host", ["https://mlflow.example.com", "mlflow.example.com:443",
                                  "mlflow_x.example.com", "-bad.example.com", "a/b"])
def test_invalid_hostnames(host: str) -> None:
    with pytest.raises(ValidationError, match="not a valid hostname"):
        Settings.model_validate({"server": {"hostname": host}})


def test_hostname_is_normalised() -> None:
    s = Settings.model_validate({"server": {"hostname": "MLflow.Example.COM."}})
    assert s.server.hostname == "mlflow.example.com"


@pytest.mark.parametrize("url", ["keycloak.example.com", "ftp://x", "https://", "http://h:99999"])
def test_invalid_urls(url: str) -> None:
    with pytest.raises(ValidationError, match="not a valid URL"):
        Settings.model_validate({"auth": {"keycloak_url": url}})


def test_mixed_case_database_name_is_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match="use 'mlflow'"):
        Settings.model_validate({"database": {"name": "MLflow"}})


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_range(port: int) -> None:
    with pytest.raises(ValidationError, match=r"less than|greater than"):
        Settings.model_validate({"server": {"port": port}})


def test_postgres_needs_host_and_keycloak_needs_url() -> None:
    with pytest.raises(ValidationError, match=r"database\.host is required"):
        Settings.model_validate({"database": {"backend": "postgresql"}})
    with pytest.raises(ValidationError, match=r"auth\.keycloak_url is required"):
        Settings.model_validate({"auth": {"provider": "keycloak"}})


def test_a_metrics_namespace_needs_prometheus_on() -> None:
    assert Settings.model_validate(
        {"kubernetes": {"metrics_namespace": "monitoring"}}).kubernetes.metrics_namespace \
        == "monitoring"
    assert Settings().kubernetes.metrics_namespace is None
    with pytest.raises(ValidationError, match=r"kubernetes\.metrics_namespace lets a namespace "
                       r"scrape /metrics, but server\.prometheus is false"):
        Settings.model_validate({"server": {"prometheus": False},
                                 "kubernetes": {"metrics_namespace": "monitoring"}})


def test_missing_secrets_named_with_their_variables() -> None:
    s = Settings.model_validate({"database": {"backend": "postgresql", "host": "db"},
                                 "artifacts": {"backend": "s3"}})
    missing = dict(s.missing_secrets())
    assert "ADMIN_PASSWORD" in missing["database password"]
    assert "AWS_ACCESS_KEY_ID" in missing["S3 access key"]
    assert "AWS_SECRET_ACCESS_KEY" in missing["S3 secret key"]
    s = s.model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr("pw"), s3_access_key_id=SecretStr("k"),
        s3_secret_access_key=SecretStr("s"))})
    assert s.missing_secrets() == []


def test_secrets_are_masked_and_excluded_from_dumps() -> None:
    secret = "very-secret-value-123"
    s = Settings().model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr(secret))})
    assert secret not in repr(s)
    assert secret not in s.model_dump_json()
    assert "secrets" not in s.model_dump()
    assert s.secrets.effective_db_password is not None
    assert s.secrets.effective_db_password.get_secret_value() == secret


def test_specific_secret_overrides_shared_admin_password() -> None:
    sec = Secrets.model_construct(admin_password=SecretStr("shared"),
                                  db_password=SecretStr("db-only"))
    assert sec.effective_db_password is not None
    assert sec.effective_db_password.get_secret_value() == "db-only"
    assert sec.effective_keycloak_admin_password is not None
    assert sec.effective_keycloak_admin_password.get_secret_value() == "shared"


def test_artifact_destination_layout() -> None:
    s = Settings.model_validate({"artifacts": {"backend": "s3", "bucket": "mlflow"}})
    assert s.artifacts.destination == "s3://mlflow/artifacts"


def test_json_schema_exports() -> None:
    schema = Settings.model_json_schema()
    assert {"server", "database", "artifacts", "auth", "kubernetes"} <= set(schema["properties"])
