"""doctor's "existing Secrets" check against a real kube-apiserver: each Secret named in
kubernetes.existing_secrets exists with the keys the config names, or the finding names the
Secret, the key and the setting."""

from __future__ import annotations

import base64
import uuid

import pytest

from harness.kube import settings_with
from harness.kubeapi import KubeAPIServer
from mlflow_stack.ops.doctor.cluster.existing_secrets import check_existing_secrets

pytestmark = pytest.mark.integration


def test_names_the_missing_secret_and_key(kube_api: KubeAPIServer) -> None:
    ns = f"doc-{uuid.uuid4().hex[:8]}"
    settings = settings_with({
        "database": {"backend": "postgresql", "host": "db.example.test"},
        "artifacts": {"backend": "s3"},
        "kubernetes": {"namespace": ns, "kubeconfig": str(kube_api.admin_kubeconfig),
                       "existing_secrets": {
                           "database": {"name": "db-creds", "password_key": "pw"},
                           "s3": {"name": "s3-creds"}}}})
    assert check_existing_secrets(settings).status == "problem"  # no namespace yet
    with kube_api.admin_http() as http:
        assert http.post("/api/v1/namespaces", json={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).status_code == 201
        for name, data in (("db-creds", {"pw": "x"}),
                           ("s3-creds", {"AWS_ACCESS_KEY_ID": "i", "AWS_SECRET_ACCESS_KEY": "k"})):
            assert http.post(f"/api/v1/namespaces/{ns}/secrets", json={
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }).status_code == 201
    found = check_existing_secrets(settings)
    assert found.status == "ok", found
    assert f"{ns}/db-creds (pw)" in found.finding

    with kube_api.admin_http() as http:
        assert http.patch(f"/api/v1/namespaces/{ns}/secrets/db-creds",
                          json={"data": {"pw": None}},
                          headers={"Content-Type": "application/merge-patch+json"}
                          ).status_code == 200
        assert http.delete(f"/api/v1/namespaces/{ns}/secrets/s3-creds").status_code == 200
    found = check_existing_secrets(settings)
    assert found.status == "problem"
    assert found.finding == (
        f"Secret {ns}/db-creds has no key 'pw' (kubernetes.existing_secrets.database."
        f"password_key); Secret {ns}/s3-creds does not exist "
        "(kubernetes.existing_secrets.s3.name)")
    assert "never writes" in found.fix


def test_nothing_named_is_fine() -> None:
    assert check_existing_secrets(settings_with({})).status == "ok"
