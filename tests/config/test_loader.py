"""Loading config files: both formats, and every kind of bad input named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from mlflow_stack.config.loader import load_config, parse_settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.errors import ConfigError

DATA = Path(__file__).parent.parent / "data"
ALL_SECRETS = Secrets.model_construct(
    admin_password=SecretStr("pw"), s3_access_key_id=SecretStr("k"),
    s3_secret_access_key=SecretStr("s"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlflow-stack.yaml"
    path.write_text(text)
    return path


def load(path: Path, secrets: Secrets = ALL_SECRETS) -> object:
    return load_config(path, secrets=secrets)


def test_no_file_means_embedded_defaults(tmp_path: Path) -> None:
    loaded = load_config(None, secrets=Secrets.none(), cwd=tmp_path)
    assert loaded.format == "defaults" and loaded.source is None
    assert loaded.settings.database.backend == "sqlite"


def test_config_found_in_working_directory(tmp_path: Path) -> None:
    write(tmp_path, "server:\n  port: 5050\n")
    loaded = load_config(None, secrets=Secrets.none(), cwd=tmp_path)
    assert loaded.format == "native" and loaded.settings.server.port == 5050


def test_native_format(tmp_path: Path) -> None:
    path = write(tmp_path, """
domain: example.com
database: {backend: postgresql, host: db.example.com, name: mlflow}
artifacts: {backend: s3, bucket: models, endpoint_url: "https://s3.example.com"}
""")
    loaded = load_config(path, secrets=ALL_SECRETS)
    s = loaded.settings
    assert loaded.format == "native"
    assert s.database.host == "db.example.com" and s.artifacts.bucket == "models"
    assert s.secrets.admin_password is not None


def test_reference_inventory_maps_every_variable() -> None:
    loaded = load_config(DATA / "reference-inventory.yaml", secrets=ALL_SECRETS)
    s = loaded.settings
    assert loaded.format == "inventory"
    assert s.kubernetes.namespace == "mlflow"
    assert s.server.hostname == "mlflow.example.com"
    assert s.storage.capacity == "1Gi"
    assert s.database.name == "mlflow" and s.database.user == "admin"
    assert s.artifacts.bucket == "mlflow"
    assert s.auth.client_id == "mlflow"
    assert s.storage.storage_class == "k8s-hostpath"
    assert s.database.namespace == "postgres"
    assert s.database.release_name == "postgresql-official"
    assert s.database.host == "postgresql-official.postgres.svc.cluster.local"
    assert s.artifacts.credentials_namespace == "seaweedfs"
    assert s.artifacts.credentials_secret == "seaweedfs-s3-config"
    assert s.artifacts.endpoint_url == "https://s3.example.com"
    assert s.auth.keycloak_url == "https://keycloak.example.com"
    assert s.auth.realm == "thinkube"
    assert s.auth.admin_username == "admin"
    assert s.auth.realm_admin_users == ["tkadmin"]
    assert s.registry.host == "harbor.example.com"
    assert s.registry.project == "library"
    assert s.registry.robot_name == "thinkube-deployer"
    assert s.domain == "example.com"
    assert str(s.kubernetes.kubeconfig) == "/var/snap/k8s/common/etc/admin.conf"
    assert s.kubernetes.kubectl_bin == "/snap/k8s/current/bin/kubectl"
    assert s.kubernetes.ingress_class == "nginx"
    # What the reference deploys: PostgreSQL, S3 and Keycloak SSO.
    assert (s.database.backend, s.artifacts.backend, s.auth.provider) == (
        "postgresql", "s3", "keycloak")
    assert loaded.ignored_keys == ["gitea_hostname", "jupyterhub_namespace"]


def test_ansible_inventory_all_vars(tmp_path: Path) -> None:
    path = write(tmp_path, """
all:
  vars:
    mlflow_hostname: experiments.example.com
    keycloak_url: https://kc.example.com
    postgres_hostname: pg.example.com
  children:
    microk8s: {}
""")
    s = load_config(path, secrets=ALL_SECRETS).settings
    assert s.server.hostname == "experiments.example.com"
    assert s.database.host == "pg.example.com"


def test_inventory_error_names_the_inventory_variable(tmp_path: Path) -> None:
    path = write(tmp_path,
                 "mlflow_capacity: 1Gb\nkeycloak_url: https://kc\npostgres_hostname: pg\n")
    with pytest.raises(ConfigError, match=r"mlflow_capacity: '1Gb' is not a Kubernetes quantity"):
        load(path)


@pytest.mark.parametrize(("text", "expected"), [
    ("server:\n  port: [1\n", r"YAML syntax error at line \d+, column \d+"),
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("- a\n- b\n", "expected a mapping of settings at the top level, got a list"),
    ("just a string\n", "expected a mapping .* got str"),
    ("server:\n  prot: 5000\n", "server.prot: unknown setting; did you mean 'port'"),
    ("databse:\n  backend: sqlite\n", "databse: unknown setting; did you mean 'database'"),
    ("server:\n  zzz: 1\n", "server.zzz: unknown setting; expected one of: bind_host, port"),
    ("server:\n  port: abc\n", "server.port: .*valid integer.*'abc'"),
    ("server:\n  port: 70000\n", "server.port: .*less than or equal to 65535"),
    ("server:\n  hostname: https://mlflow.example.com\n",
     "server.hostname: .*not a valid hostname"),
    ("auth:\n  keycloak_url: keycloak.example.com\n", "auth.keycloak_url: .*not a valid URL"),
    ("storage:\n  capacity: 1Gb\n", "storage.capacity: '1Gb' is not a Kubernetes quantity"),
    ("artifacts:\n  bucket: My_Bucket\n", "artifacts.bucket: .*not a valid S3 bucket name"),
    ("kubernetes:\n  namespace: ML.flow\n", "kubernetes.namespace: 'ML.flow' is not a valid "
     "Kubernetes namespace name: expected an RFC 1123 label"),
    ("artifacts:\n  credentials_secret: s3_keys\n", "artifacts.credentials_secret: 's3_keys' is "
     "not a valid Kubernetes Secret name: expected an RFC 1123 subdomain"),
    ("database:\n  password: hunter2\n", "database.password: secrets are not read from the "
     "config file; set ADMIN_PASSWORD"),
    ("artifacts:\n  secret_access_key: x\n", "set MLFLOW_STACK_S3_SECRET_ACCESS_KEY or "
     "AWS_SECRET_ACCESS_KEY"),
])
def test_bad_input(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load(path)
    assert info.value.exit_code == 2
    assert str(path) in info.value.message
    assert "hunter2" not in info.value.message


@pytest.mark.parametrize(("data", "expected"), [
    ("server:\n  # café\n  port: 5000\n".encode("latin-1"),
     r"is not UTF-8 text \(byte 0xe9 at offset 15, line 2\): save it as UTF-8$"),
    ("server:\n  port: 5000\n".encode("utf-16"), r"is not UTF-8 text \(it is UTF-16\)"),
    ("server:\n  port: 5000\n".encode("utf-32"), r"is not UTF-8 text \(it is UTF-32\)"),
    ("server:\n  port: 5000\n".encode("utf-16-le"),  # no byte-order mark: ASCII + NULs
     r"is not UTF-8 text \(NUL byte at offset 1\)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"\(byte 0x89 at offset 0, line 1\)"),
])
def test_file_that_is_not_utf8_text(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "mlflow-stack.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=expected) as info:
        load(path)
    assert info.value.exit_code == 2
    assert info.value.message.startswith(f"{path} is not UTF-8 text")


def test_utf8_text_with_bom_and_accents_loads(tmp_path: Path) -> None:
    path = tmp_path / "mlflow-stack.yaml"
    path.write_bytes("\ufeffdiscovery:\n  display_name: Expériences\n".encode())
    assert load_config(path, secrets=Secrets.none()).settings.discovery.display_name == (
        "Expériences")


def test_missing_required_secret(tmp_path: Path) -> None:
    path = write(tmp_path, "database: {backend: postgresql, host: db.example.com}\n")
    with pytest.raises(ConfigError, match=r"missing required secret.*ADMIN_PASSWORD") as info:
        load(path, Secrets.none())
    assert info.value.exit_code == 2


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", secrets=Secrets.none())


def test_parse_settings_accepts_mapping() -> None:
    assert parse_settings({"server": {"port": 5001}}).settings.server.port == 5001
