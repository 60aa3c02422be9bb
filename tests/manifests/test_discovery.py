"""Service discovery and code-server integration (the reference's 17_configure_discovery)."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs

import pytest
import yaml
from pydantic import SecretStr

from harness.http_server import QuietHandler, serving
from harness.kube import SECRET_KEY_VALUE, SECRET_VALUES, find, kinds
from mlflow_stack.config.model import Settings
from mlflow_stack.manifests import discovery
from mlflow_stack.manifests.render import render

TOKEN_URL = "https://keycloak.example.com/realms/thinkube/protocol/openid-connect/token"


def service_doc(objects: list[dict[str, Any]]) -> dict[str, Any]:
    cm = find(objects, "ConfigMap", "thinkube-service-config")
    return dict(yaml.safe_load(cm["data"]["service.yaml"])["service"])


def test_discovery_configmap_reference(reference: Settings) -> None:
    objects = render(reference).objects
    cm = find(objects, "ConfigMap", "thinkube-service-config", namespace="mlflow")
    labels = cm["metadata"]["labels"]
    assert labels["thinkube.io/managed"] == "true"
    assert labels["thinkube.io/service-type"] == "core"
    assert labels["thinkube.io/service-name"] == "mlflow"
    doc = service_doc(objects)
    assert doc["display_name"] == "MLflow"
    assert doc["description"] == "ML experiment tracking and model registry"
    assert doc["category"] == "ai"
    assert doc["icon"] == "/icons/tk_ai.svg"
    assert doc["endpoints"] == [{
        "name": "web", "type": "http", "url": "https://mlflow.example.com",
        "health_url": "https://mlflow.example.com/health", "description": "Web interface",
        "primary": True}]
    assert doc["dependencies"] == ["postgres", "seaweedfs", "keycloak"]
    assert doc["scaling"] == {"resource_type": "deployment", "resource_name": "mlflow",
                              "namespace": "mlflow", "min_replicas": 1, "can_disable": True}
    env = {v["name"]: v for v in doc["environment_variables"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "https://mlflow.example.com"
    assert env["MLFLOW_KEYCLOAK_TOKEN_URL"]["value"] == TOKEN_URL
    assert env["MLFLOW_KEYCLOAK_CLIENT_ID"]["value"] == "mlflow"
    assert env["MLFLOW_TRACKING_AUTH"]["value"] == "keycloak"
    # Credentials are references to the Secret, never values.
    for name in ("MLFLOW_AUTH_USERNAME", "MLFLOW_AUTH_PASSWORD", "MLFLOW_CLIENT_SECRET"):
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"] == {
            "name": "mlflow-client-env", "namespace": "mlflow", "key": name}


def test_discovery_configured_values() -> None:
    s = Settings.model_validate({
        "server": {"hostname": "experiments.example.com"},
        "discovery": {"configmap": "svc-config", "display_name": "Experiments",
                      "description": "Tracking", "category": "ml", "icon": "/i.svg"}})
    doc = service_doc([{**find(render(s).objects, "ConfigMap", "svc-config"),
                        "metadata": {"name": "thinkube-service-config"}}])
    assert (doc["display_name"], doc["description"], doc["category"], doc["icon"]) == (
        "Experiments", "Tracking", "ml", "/i.svg")
    assert doc["endpoints"][0]["url"] == "https://experiments.example.com"
    assert doc["dependencies"] == []
    # No SSO configured: only the tracking URI.
    assert [v["name"] for v in doc["environment_variables"]] == ["MLFLOW_TRACKING_URI"]


def test_discovery_without_public_host_points_inside_the_cluster() -> None:
    doc = service_doc(render(Settings()).objects)
    assert doc["endpoints"][0]["url"] == "http://mlflow.mlflow.svc.cluster.local:5000"


def test_client_secrets_hold_the_client_environment(reference_with_secrets: Settings) -> None:
    objects = render(reference_with_secrets, include_secrets=True,
                     secret_key=SecretStr(SECRET_KEY_VALUE)).objects
    for ns in ("mlflow", "code-server"):
        secret = find(objects, "Secret", "mlflow-client-env", namespace=ns)
        values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert values == {
            "MLFLOW_TRACKING_URI": "https://mlflow.example.com",
            "MLFLOW_TRACKING_AUTH": "keycloak",
            "MLFLOW_KEYCLOAK_TOKEN_URL": TOKEN_URL,
            "MLFLOW_KEYCLOAK_CLIENT_ID": "mlflow",
            "MLFLOW_CLIENT_SECRET": SECRET_VALUES["oidc_client_secret"],
            "MLFLOW_AUTH_USERNAME": "tkadmin",
            "MLFLOW_AUTH_PASSWORD": SECRET_VALUES["admin_password"],
        }


def test_the_client_secret_is_described_by_what_it_holds(reference: Settings) -> None:
    def how(settings: Settings) -> set[str]:
        return {n.how for n in render(settings).secrets_needed if n.name == "mlflow-client-env"}

    [sso] = how(reference)
    assert "Keycloak client secret" in sso and "password" in sso
    [plain] = how(Settings())  # no SSO: only the tracking URI, nothing to keep secret
    assert "Keycloak" not in plain and "password" not in plain and "tracking URI only" in plain


def test_code_server_objects_and_patch(reference: Settings) -> None:
    rendered = render(reference)
    helpers = find(rendered.objects, "ConfigMap", "mlflow-auth-helpers", namespace="code-server")
    assert set(helpers["data"]) == {"mlflow-auth.sh", "mlflow-auth.fish"}
    [patch] = rendered.patches
    assert (patch.kind, patch.namespace, patch.name) == ("Deployment", "code-server",
                                                         "code-server")
    pod = patch.body["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["name"] == "code-server"
    assert {m["mountPath"] for m in c["volumeMounts"]} == {
        "/home/thinkube/mlflow-auth.sh", "/home/thinkube/mlflow-auth.fish"}
    assert all(e["valueFrom"]["secretKeyRef"]["name"] == "mlflow-client-env" for e in c["env"])
    assert "MLFLOW_AUTH_PASSWORD" in [e["name"] for e in c["env"]]
    assert pod["volumes"][0]["configMap"]["name"] == "mlflow-auth-helpers"


def test_code_server_and_discovery_are_optional(reference: Settings) -> None:
    reference.discovery.code_server = False
    rendered = render(reference)
    assert not rendered.patches
    assert all(o["metadata"].get("namespace") != "code-server" for o in rendered.objects)
    reference.discovery.enabled = False
    rendered = render(reference)
    assert "thinkube-service-config" not in [o["metadata"]["name"] for o in rendered.objects]
    assert "mlflow-client-env" not in [n.name for n in rendered.secrets_needed]
    assert "Secret" not in kinds(rendered.objects)


@pytest.mark.parametrize("name", discovery.HELPER_SCRIPTS)
def test_helper_scripts_fix_the_reference_faults(name: str) -> None:
    text = discovery.helper_script(name)
    assert "DEBUG" not in text
    assert " -k" not in text and "--insecure" not in text
    assert "--data @-" in text
    assert "MLFLOW_TRACKING_TOKEN" in text
    # The password is never on a command line: only python3 reads it, from the environment.
    assert "$MLFLOW_AUTH_PASSWORD" not in text.replace('"$MLFLOW_AUTH_PASSWORD"', "")
    assert 'e["MLFLOW_AUTH_PASSWORD"]' in text


class _TokenEndpoint(QuietHandler):
    received: ClassVar[list[dict[str, list[str]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        form = parse_qs(body)
        type(self).received.append(form)
        if form.get("password") == ["p&ss=word with spaces"]:
            payload, status = b'{"access_token": "tok-123", "expires_in": 300}', 200
        else:
            payload, status = b'{"error": "invalid_grant", ' \
                              b'"error_description": "Invalid user credentials"}', 401
        self.send_body(status, payload)


@pytest.fixture
def token_endpoint() -> Iterator[str]:
    with serving(_TokenEndpoint) as url:
        yield f"{url}/token"


def _run_bash_helper(tmp_path: Path, url: str, password: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "mlflow-auth.sh"
    script.write_text(discovery.helper_script("mlflow-auth.sh"))
    env = {"PATH": os.environ["PATH"], "MLFLOW_KEYCLOAK_TOKEN_URL": url,
           "MLFLOW_KEYCLOAK_CLIENT_ID": "mlflow", "MLFLOW_AUTH_USERNAME": "tkadmin",
           "MLFLOW_AUTH_PASSWORD": password, "MLFLOW_CLIENT_SECRET": "cs"}
    return subprocess.run(
        ["bash", "-c", f'source {script} && echo "TOKEN=$MLFLOW_TRACKING_TOKEN"'],
        env=env, capture_output=True, text=True, timeout=60, check=False)


def test_bash_helper_gets_a_token(tmp_path: Path, token_endpoint: str) -> None:
    _TokenEndpoint.received.clear()
    result = _run_bash_helper(tmp_path, token_endpoint, "p&ss=word with spaces")
    assert result.returncode == 0, result.stderr
    assert "TOKEN=tok-123" in result.stdout
    assert "expires in 300 seconds" in result.stdout
    assert _TokenEndpoint.received == [{
        "grant_type": ["password"], "client_id": ["mlflow"], "username": ["tkadmin"],
        "password": ["p&ss=word with spaces"], "client_secret": ["cs"]}]


def test_bash_helper_reports_a_refusal(tmp_path: Path, token_endpoint: str) -> None:
    result = _run_bash_helper(tmp_path, token_endpoint, "wrong")
    assert result.returncode != 0
    assert "Invalid user credentials" in result.stderr
    assert "wrong" not in result.stdout + result.stderr
    assert "TOKEN=" not in result.stdout
