"""The two PersistentVolumeClaims of the reference, both optional."""

from __future__ import annotations

from harness.kube import find, kinds, settings_with
from mlflow_stack.config.model import Settings
from mlflow_stack.manifests.render import render


def test_reference_pvcs(reference: Settings) -> None:
    objects = render(reference).objects
    local = find(objects, "PersistentVolumeClaim", "mlflow-storage")
    assert local["metadata"]["namespace"] == "mlflow"
    assert local["spec"] == {"accessModes": ["ReadWriteOnce"], "storageClassName": "k8s-hostpath",
                             "resources": {"requests": {"storage": "1Gi"}}}
    models = find(objects, "PersistentVolumeClaim", "thinkube-models")
    assert models["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "juicefs-rwx",
                              "resources": {"requests": {"storage": "500Gi"}}}
    labels = models["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "ml-models"
    assert labels["app.kubernetes.io/managed-by"] == "thinkube"
    assert local["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlflow-stack"


def test_configured_pvcs() -> None:
    s = settings_with({"storage": {
        "storage_class": "fast", "capacity": "20Gi", "local_pvc_name": "mlflow-local",
        "models": {"name": "shared-models", "storage_class": "nfs", "capacity": "2Ti"}}})
    objects = render(s).objects
    local = find(objects, "PersistentVolumeClaim", "mlflow-local")
    assert local["spec"]["storageClassName"] == "fast"
    assert local["spec"]["resources"]["requests"]["storage"] == "20Gi"
    models = find(objects, "PersistentVolumeClaim", "shared-models")
    assert models["spec"]["storageClassName"] == "nfs"
    assert models["spec"]["resources"]["requests"]["storage"] == "2Ti"


def test_pvcs_are_optional(reference: Settings) -> None:
    reference.storage.local_pvc = False
    reference.storage.models.enabled = False
    assert "PersistentVolumeClaim" not in kinds(render(reference).objects)
