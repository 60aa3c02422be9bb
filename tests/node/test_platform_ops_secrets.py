"""Secrets the cluster already has (kubernetes.existing_secrets), on the real node, after
test_platform_ha.py on the session's `reference_platform`: Secrets made the way External Secrets
makes them (another field manager, its label, an ownerReference to the object they are synced
for), under names and keys of their own; `apply` by an engineer whose environment holds none of
their values; the pods start from them and serve; apply never touched them, plan shows no drift,
and plan and doctor name a key that disappears. The original config is applied again at the
end."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from typing import Any

import httpx
import pytest
import yaml

from harness.node_platform import CLI, DOMAIN, HOSTNAME, NAMESPACE, Deployed, wait_for
from mlflow_stack.config.loader import load_config

pytestmark = pytest.mark.integration

OWNER = "vault-sync"  # stands in for the ExternalSecret the Secrets belong to
MANAGER = "external-secrets"
API = f"/api/v1/namespaces/{NAMESPACE}"

ROUND_TRIP = """
import json, os, tempfile
import mlflow
mlflow.set_experiment("existing-secrets")
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "note.txt")
    with open(path, "w") as handle:
        handle.write("from an existing Secret")
    with mlflow.start_run() as run:
        mlflow.log_param("source", "external-secrets")
        mlflow.log_artifact(path)
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                artifact_path="note.txt", dst_path=tmp + "/d")
    print("RESULT " + json.dumps({"text": open(local).read()}))
"""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _request(platform: Deployed, method: str, path: str, body: dict[str, Any] | None = None,
             **headers: str) -> dict[str, Any]:
    with platform.node.api.admin_http() as http:
        response = http.request(method, path, json=body, headers=headers or None,
                                params={"fieldManager": MANAGER} if body else None)
        assert response.status_code < 300, response.text
        result: dict[str, Any] = response.json()
        return result


def _external_secrets(platform: Deployed) -> dict[str, dict[str, str]]:
    """The Secrets (name -> data), created as External Secrets' controller creates them."""
    tls = platform.get(f"/api/v1/namespaces/default/secrets/{DOMAIN.replace('.', '-')}-tls")
    auth = _b64("robot$vault:" + secrets.token_urlsafe(12))
    docker = json.dumps({"auths": {"localhost": {"auth": auth}}})
    wanted: dict[str, tuple[str, dict[str, str]]] = {
        "vault-db": ("Opaque", {"password": _b64(platform.admin_password)}),
        "vault-s3": ("Opaque", {"accessKey": _b64(platform.s3.access_key),
                                "secretKey": _b64(platform.s3.secret_key)}),
        "vault-oidc": ("Opaque", {"clientSecret": _b64(platform.client_secret())}),
        "vault-session": ("Opaque", {"flask.key": _b64(secrets.token_urlsafe(48))}),
        "vault-regcred": ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": _b64(docker)}),
        "vault-tls": ("kubernetes.io/tls", {k: tls["data"][k] for k in ("tls.crt", "tls.key")}),
    }
    owner = _request(platform, "POST", f"{API}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": OWNER}})
    for name, (kind, data) in wanted.items():
        _request(platform, "POST", f"{API}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "type": kind, "data": data,
            "metadata": {"name": name, "labels": {"reconcile.external-secrets.io/managed": "true"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                                              "name": OWNER, "uid": owner["metadata"]["uid"]}]}})
    return {name: data for name, (_, data) in wanted.items()}


def _config(platform: Deployed) -> str:
    """The config applied last, as a native config naming the existing Secrets."""
    settings = load_config(platform.config, require_secrets=False).settings
    data = settings.model_dump(mode="json", exclude={"secrets"}, exclude_defaults=True)
    data.setdefault("kubernetes", {})["existing_secrets"] = {
        "database": {"name": "vault-db", "password_key": "password"},
        "s3": {"name": "vault-s3", "access_key_id_key": "accessKey",
               "secret_access_key_key": "secretKey"},
        "oidc_client": {"name": "vault-oidc", "client_secret_key": "clientSecret"},
        "session_key": {"name": "vault-session", "key": "flask.key"},
        "pull_secret": "vault-regcred",
        "tls": "vault-tls",
    }
    path = platform.home / "existing-secrets.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _cli(platform: Deployed, *args: str) -> subprocess.CompletedProcess[str]:
    """As an engineer with External Secrets: the Keycloak admin login, and not one of the
    values the Secrets hold (no ADMIN_PASSWORD, S3 keys or registry token)."""
    env = {k: v for k, v in platform.env.items()
           if k not in ("ADMIN_PASSWORD", "HARBOR_ROBOT_TOKEN") and not k.startswith("AWS_")}
    return platform.node.run([*CLI, *args], env, timeout=900, cwd=platform.home)


def _versions(platform: Deployed, names: list[str]) -> dict[str, str]:
    return {n: platform.get(f"{API}/secrets/{n}")["metadata"]["resourceVersion"] for n in names}


def test_existing_secrets_serve_and_are_never_written(reference_platform: Deployed) -> None:
    platform = reference_platform
    created = _external_secrets(platform)
    names = sorted(created)
    try:
        before = _versions(platform, names)
        config = _config(platform)
        result = _cli(platform, "apply", "-c", config)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert "referred to, not managed" in out, out
        for value in (platform.admin_password, platform.s3.secret_key):
            assert value not in out

        # The pods started from them (a missing key would stop the container) and serve.
        pods = wait_for(lambda: [p for p in platform.ready_pods() if any(
            e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "vault-db"
            for e in p["spec"]["containers"][0].get("env", []))],
            "a Ready pod reading vault-db", timeout=300)
        spec = pods[0]["spec"]
        assert spec["imagePullSecrets"] == [{"name": "vault-regcred"}]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"]
               for e in spec["containers"][0]["env"] if "valueFrom" in e}
        assert env["SECRET_KEY"] == {"name": "vault-session", "key": "flask.key"}
        assert env["OIDC_CLIENT_SECRET"] == {"name": "vault-oidc", "key": "clientSecret"}
        service = platform.get(f"{API}/services/mlflow")
        token = platform.token(platform.realm_admin)

        def through_service() -> httpx.Response:
            with httpx.Client(trust_env=False, timeout=30) as http:
                return http.get(
                    f"http://{service['spec']['clusterIP']}:5000/api/2.0/mlflow/experiments/"
                    "search?max_results=5", headers={"Host": HOSTNAME,
                                                     "Authorization": f"Bearer {token}"})
        response = platform.node.in_netns(through_service)
        assert response.status_code == 200, response.text[:500]
        # Metadata (database password), artifacts (S3 keys) and the ingress's certificate
        # (vault-tls) in one user's round trip through the public URL.
        outcome = platform.run_python(ROUND_TRIP, env=platform.user_env())
        assert outcome["text"] == "from an existing Secret"
        ingress = platform.get(f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/ingresses/"
                               "mlflow")
        assert ingress["spec"]["tls"][0]["secretName"] == "vault-tls"

        # apply never wrote them, and plan sees nothing to do.
        assert _versions(platform, names) == before
        for name in names:
            managers = {m["manager"] for m in
                        platform.get(f"{API}/secrets/{name}")["metadata"]["managedFields"]}
            assert managers == {MANAGER}, (name, managers)
        plan = _cli(platform, "plan", "-c", config)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "No changes" in plan.stdout, plan.stdout

        # A key disappears (the secret store lost it): plan and doctor name it.
        _request(platform, "PATCH", f"{API}/secrets/vault-db", {"data": {"password": None}},
                 **{"Content-Type": "application/merge-patch+json"})
        missing = (f"Secret {NAMESPACE}/vault-db has no key 'password' "
                   "(kubernetes.existing_secrets.database.password_key)")
        plan = _cli(platform, "plan", "-c", config)
        assert plan.returncode == 2 and missing in " ".join(plan.stderr.split()), \
            plan.stdout + plan.stderr
        doctor = _cli(platform, "doctor", "-c", config, "-o", "json")
        assert doctor.returncode == 1, doctor.stdout + doctor.stderr
        findings = json.loads(doctor.stdout)
        named = [f for f in findings if f["status"] == "problem" and missing in f["finding"]]
        assert {f["check"] for f in named} >= {"existing Secrets"}, findings
        assert "Traceback" not in doctor.stderr + plan.stderr
    finally:
        back = platform.cli("apply", "-c", str(platform.config))
        assert back.returncode == 0, back.stdout + back.stderr
        for name in names:
            with platform.node.api.admin_http() as http:
                http.delete(f"{API}/secrets/{name}")
        with platform.node.api.admin_http() as http:
            http.delete(f"{API}/configmaps/{OWNER}")
