"""The reference deployment, whole, on the real node: `mlflow-stack apply` with an inventory like
the reference's brings the platform up from nothing, a user works with it, and `doctor` names
real faults. (The deployment is the session's `reference_platform`; test_platform_ha.py and
test_uninstall.py use it after this module.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.browser import CHROMIUM, CHROMIUM_ARGS
from harness.node_platform import NAMESPACE, PUBLIC_URL, REALM, Deployed, wait_for

pytestmark = pytest.mark.integration

REFERENCE_CLIENT = Path(__file__).resolve().parents[1] / "local" / "reference_client.py"


def test_apply_brings_the_reference_platform_up_from_nothing(
        reference_platform: Deployed) -> None:
    first, second = reference_platform.outputs[:2]
    out = first.stdout + first.stderr
    for step in ("keycloak: create client mlflow", "postgres: create database mlflow",
                 "bucket: create bucket mlflow",
                 f"kubernetes: create Deployment {NAMESPACE}/mlflow"):
        assert step in out, out
    # The migration Job ran the image to completion (a real controller and kubelet).
    jobs = reference_platform.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")["items"]
    assert len(jobs) == 1 and jobs[0]["status"].get("succeeded") == 1, jobs
    # The S3 keys came from the reference's seaweedfs-s3-config Secret.
    s3_secret = reference_platform.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/mlflow-s3-secret")
    assert set(s3_secret["data"]) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # Ready through its startup, readiness and liveness probes, never restarted.
    pods = reference_platform.ready_pods()
    assert len(pods) == 1, reference_platform.server_pods()
    container = pods[0]["spec"]["containers"][0]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    assert pods[0]["status"]["containerStatuses"][0]["restartCount"] == 0
    for secret in (reference_platform.admin_password,
                   reference_platform.keycloak.server.admin_password,
                   reference_platform.s3.secret_key):
        assert secret not in out
    assert second.returncode == 0, second.stdout + second.stderr
    assert "No changes" in second.stdout, second.stdout + second.stderr
    print(f"\nfirst apply {reference_platform.first_apply_seconds:.0f} s; node memory (MiB) "
          + ", ".join(f"{k} {v:.0f}" for k, v in reference_platform.node.memory().items()))


def test_verify_passes_through_the_ingress_as_a_keycloak_user(
        reference_platform: Deployed) -> None:
    """`verify -c` as the engineer runs it after a deploy: the config's public URL (Traefik,
    TLS with the wildcard certificate), a temporary Keycloak user with the user role."""
    result = reference_platform.cli("verify", "-c", str(reference_platform.inventory),
                                    timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert PUBLIC_URL in out and "temporary Keycloak user" in out, out


BROWSER = """
import json, os, sys
from playwright.sync_api import sync_playwright
chromium, args, url, issuer = sys.argv[1:5]
# The login comes from the environment, as the client plugin reads it (never from argv).
user, password = os.environ["MLFLOW_AUTH_USERNAME"], os.environ["MLFLOW_AUTH_PASSWORD"]
with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=chromium, args=json.loads(args))
    # The test CA is not in Chromium's store; the CLI and clients check it (SSL_CERT_FILE).
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_url(issuer + "/**", timeout=60_000)
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#kc-login")
    page.wait_for_url(url + "/**", timeout=60_000)
    page.wait_for_selector("text=Experiments", timeout=60_000)
    status = page.request.get(url + "/auth/status").json()
    print("RESULT " + json.dumps({"status": status, "title": page.title()}))
    browser.close()
"""


def test_a_browser_logs_in_through_the_ingress_and_sees_the_ui(
        reference_platform: Deployed) -> None:
    platform = reference_platform
    user = platform.realm_admin
    # Keycloak is served over plain http inside the cluster here; its cookies are Secure, which
    # Chromium keeps only for trustworthy origins.
    args = [*CHROMIUM_ARGS,
            f"--unsafely-treat-insecure-origin-as-secure={platform.keycloak.url}"]
    result = platform.run_python(
        BROWSER, str(CHROMIUM), json.dumps(args), PUBLIC_URL,
        f"{platform.keycloak.url}/realms/{REALM}", env=platform.user_env(user), timeout=300)
    assert result["status"]["authenticated"] is True, result
    assert result["status"]["username"] == user.email, result


def test_the_reference_client_examples_pass_with_keycloak_login(
        reference_platform: Deployed) -> None:
    env = reference_platform.user_env()
    written = reference_platform.run_python(str(REFERENCE_CLIENT), "write", env=env)
    checked = reference_platform.run_python(str(REFERENCE_CLIENT), "check", env=env)
    assert checked["run_id"] == written["run_id"]
    keys = reference_platform.bucket_keys("mlflow")
    assert any(written["run_id"] in key and key.endswith("notes.txt") for key in keys), keys


def _doctor(platform: Deployed) -> dict[str, dict[str, Any]]:
    """doctor -o json against the live cluster: {check: finding}."""
    result = platform.cli("doctor", "-c", str(platform.inventory), "--target", "kubernetes",
                          "-o", "json", timeout=300)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    data = json.loads(result.stdout)
    findings = data["findings"] if isinstance(data, dict) else data
    return {f["check"]: f for f in findings}


def _problems(platform: Deployed) -> dict[str, dict[str, Any]]:
    return {k: f for k, f in _doctor(platform).items() if f["status"] == "problem"}


def _repair(platform: Deployed) -> None:
    """apply puts back what a fault changed, and the platform is healthy again."""
    result = platform.cli("apply", "-c", str(platform.inventory))
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: not _problems(platform), "doctor clean after apply")


def _recreate(platform: Deployed, path: str, saved: dict[str, Any]) -> None:
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        saved["metadata"].pop(key, None)
    with platform.node.api.admin_http() as http:
        response = http.post(path.rsplit("/", 1)[0], json=saved)
        assert response.status_code == 201, response.text


def test_doctor_names_real_faults_with_their_fix(reference_platform: Deployed) -> None:
    platform = reference_platform
    assert not _problems(platform)

    # The database down: its Service loses its endpoint (kube-proxy rejects connections).
    slice_path = ("/apis/discovery.k8s.io/v1/namespaces/postgres/endpointslices/"
                  "postgresql-official")
    saved = platform.get(slice_path)
    with platform.node.api.admin_http() as http:
        assert http.delete(slice_path).status_code == 200
    try:
        problems = wait_for(lambda: _problems(platform), "doctor sees the database down")
        assert any("postgresql-official" in f["finding"] for f in problems.values()), problems
    finally:
        _recreate(platform, slice_path, saved)
    wait_for(lambda: not _problems(platform), "doctor clean with the database back")

    # The S3 keys' Secret missing.
    secret_path = "/api/v1/namespaces/seaweedfs/secrets/seaweedfs-s3-config"
    saved = platform.get(secret_path)
    with platform.node.api.admin_http() as http:
        assert http.delete(secret_path).status_code == 200
    try:
        problems = _problems(platform)
        assert any("seaweedfs-s3-config" in f["finding"] for f in problems.values()), problems
    finally:
        _recreate(platform, secret_path, saved)

    # An image that does not exist: the new pod cannot pull it (the old one keeps serving).
    platform.patch_deployment({"spec": {"template": {"spec": {"containers": [
        {"name": "mlflow", "image": "localhost/library/mlflow-custom:does-not-exist"}]}}}})
    problems = wait_for(
        lambda: {k: f for k, f in _problems(platform).items()
                 if "cannot be pulled" in f["finding"]}, "doctor sees the pull failure")
    assert any("registry.host/project/image/tag" in f["fix"] for f in problems.values()), problems
    _repair(platform)

    # A failing probe: the readiness probe asks for a path that does not exist.
    platform.patch_deployment({"spec": {"template": {"spec": {"containers": [
        {"name": "mlflow", "readinessProbe": {"httpGet": {"path": "/no-such-probe"}}}]}}}})
    problems = wait_for(
        lambda: {k: f for k, f in _problems(platform).items()
                 if "ready" in f["finding"].lower()}, "doctor sees the failing probe")
    assert any("probe" in (f["finding"] + f["fix"]).lower() for f in problems.values()), problems
    _repair(platform)
