"""kubernetes.existing_secrets: Secret and key names validated as Kubernetes does (the key rule
checked against a real kube-apiserver), refused at `config check` with exit 2 naming the field,
and a did-you-mean for misspelt keys inside its sections."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.kubeapi import KubeAPIServer
from mlflow_stack.config.existing_secrets import check_secret_key, in_use
from mlflow_stack.config.loader import parse_settings
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError

KEYS = ["DB_PASSWORD", "client-secret", ".dockerconfigjson", "tls.crt", "a", "a..b", "-x-",
        "_", "x" * 253, "x" * 254, "", ".", "..", "a b", "a/b", "ключ", "a:b", "pw\n", "é"]


def key_accepted(value: str) -> bool:
    try:
        check_secret_key(value)
    except ValueError:
        return False
    return True


@pytest.mark.integration
def test_the_key_rule_agrees_with_the_api_server(kube_api: KubeAPIServer) -> None:
    disagreements = []
    with kube_api.admin_http() as http:
        for key in KEYS:
            response = http.post("/api/v1/namespaces/default/secrets", params={"dryRun": "All"},
                                 json={"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "key-rule"},
                                       "stringData": {key: "v"}})
            assert response.status_code in (201, 422), response.text
            if key_accepted(key) != (response.status_code == 201):
                disagreements.append((key, response.status_code))
    assert disagreements == []


@pytest.mark.parametrize(("data", "needle"), [
    ({"database": {"name": "db", "password_key": "a b"}},
     "kubernetes.existing_secrets.database.password_key: 'a b' is not a valid Secret key"),
    ({"s3": {"name": "s", "secret_access_key_key": "x" * 254}},
     "kubernetes.existing_secrets.s3.secret_access_key_key: "),
    ({"oidc_client": {"name": "Bad_Name"}},
     "kubernetes.existing_secrets.oidc_client.name: 'Bad_Name' is not a valid Kubernetes "
     "Secret name"),
    ({"session_key": {"key": "k"}}, "kubernetes.existing_secrets.session_key.name: "),
    ({"tls": "Bad_Name"}, "kubernetes.existing_secrets.tls: 'Bad_Name' is not a valid "),
    ({"database": {"name": "db", "pasword_key": "pw"}},
     "kubernetes.existing_secrets.database.pasword_key: unknown setting; did you mean "
     "'password_key'?"),
    ({"databse": {"name": "db"}}, "did you mean 'database'?"),
])
def test_bad_values_are_refused_naming_the_field(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"kubernetes": {"existing_secrets": data}}, "c.yaml")
    assert info.value.exit_code == 2
    assert needle in info.value.message


def test_config_check_exits_2_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "kubernetes:\n  existing_secrets:\n    s3: {name: s3-creds, access_key_id_key: 'a/b'}\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "mlflow_stack.cli.main", "config", "check",
                             "-c", "c.yaml"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "c.yaml: kubernetes.existing_secrets.s3.access_key_id_key: 'a/b'" in result.stderr


def test_names_of_keys_are_not_mistaken_for_inline_secrets() -> None:
    """The loader refuses secret-looking keys (password, secret_key, ...) in the YAML: these
    settings hold names, and none of them is refused."""
    loaded = parse_settings({"kubernetes": {"existing_secrets": {
        "database": {"name": "db", "password_key": "pw"},
        "s3": {"name": "s3", "access_key_id_key": "i", "secret_access_key_key": "k"},
        "oidc_client": {"name": "o", "client_secret_key": "c"},
        "session_key": {"name": "s", "key": "k"}, "pull_secret": "p", "tls": "t"}}}, "c.yaml")
    existing = loaded.settings.kubernetes.existing_secrets
    assert existing.s3 is not None and existing.s3.secret_access_key_key == "k"


def test_defaults_are_the_keys_of_our_own_secrets() -> None:
    settings = Settings.model_validate({
        "database": {"backend": "postgresql", "host": "db"},
        "kubernetes": {"existing_secrets": {"database": {"name": "db-creds"}}}})
    (db,) = in_use(settings)
    assert [(u.key, u.field) for u in db.keys] == [
        ("DB_PASSWORD", "kubernetes.existing_secrets.database.password_key")]
    assert db.field == "kubernetes.existing_secrets.database.name"
    assert db.problems({"DB_PASSWORD": ""}) == [
        "Secret mlflow/db-creds has no key 'DB_PASSWORD' "
        "(kubernetes.existing_secrets.database.password_key)"]
    assert db.problems(None) == [
        "Secret mlflow/db-creds does not exist (kubernetes.existing_secrets.database.name)"]
    assert db.problems({"DB_PASSWORD": "c2VjcmV0"}) == []
    with pytest.raises(ValidationError):
        Settings.model_validate({"kubernetes": {"existing_secrets": {"database": {}}}})
