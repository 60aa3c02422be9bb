"""The whole object list, the files and kustomization.yaml, and the stable SECRET_KEY."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from harness.kube import SECRET_KEY_VALUE
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.manifests import labels as lb
from mlflow_stack.manifests.render import (
    read_secret_key,
    render,
    write_manifests,
)

REFERENCE_OBJECTS = [
    ("Namespace", None, "mlflow"),
    ("PersistentVolumeClaim", "mlflow", "mlflow-storage"),
    ("PersistentVolumeClaim", "mlflow", "thinkube-models"),
    ("ConfigMap", "mlflow", "mlflow-group-plugin"),
    ("Job", "mlflow", None),
    ("Deployment", "mlflow", "mlflow"),
    ("Service", "mlflow", "mlflow"),
    ("Ingress", "mlflow", "mlflow"),
    ("NetworkPolicy", "mlflow", "mlflow"),
    ("ConfigMap", "mlflow", "thinkube-service-config"),
    ("ConfigMap", "code-server", "mlflow-auth-helpers"),
]


def test_reference_inventory_renders_every_object_in_order(reference: Settings) -> None:
    objects = render(reference).objects
    got = [(o["kind"], o["metadata"].get("namespace"),
            None if o["kind"] == "Job" else o["metadata"]["name"]) for o in objects]
    assert got == REFERENCE_OBJECTS


def test_every_object_carries_the_standard_labels(reference_with_secrets: Settings) -> None:
    rendered = render(reference_with_secrets, include_secrets=True,
                      secret_key=SecretStr(SECRET_KEY_VALUE))
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        for key in ("name", "instance", "component", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, (obj["kind"], key)
        assert labels["app.kubernetes.io/instance"] == "mlflow"
        assert labels["app.kubernetes.io/part-of"] == "mlflow-stack"


def test_namespace_follows_the_config() -> None:
    s = Settings.model_validate({"kubernetes": {"namespace": "tracking"}})
    objects = render(s).objects
    psa = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "audit", "warn")}
    assert objects[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "tracking", "labels": {**lb.standard_labels(s, "namespace"), **psa}}}
    namespaced = [o for o in objects[1:] if o["metadata"]["namespace"] != "code-server"]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"tracking"}


def test_rendering_is_deterministic(reference: Settings) -> None:
    assert render(reference) == render(reference)


def test_write_manifests(tmp_path: Path, reference: Settings) -> None:
    rendered = render(reference)
    written = write_manifests(rendered, tmp_path / "out")
    out = tmp_path / "out"
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(rendered.objects)
    # Every listed file holds exactly its object, in apply order.
    for name, obj in zip(resources, rendered.objects, strict=True):
        assert yaml.safe_load((out / name).read_text()) == obj
    assert "job-mlflow-db-migrate.yaml" in resources
    assert "code-server-configmap-mlflow-auth-helpers.yaml" in resources
    # The patch for code-server is beside the kustomization, not in it.
    patch_file = out / "patches" / "deployment-code-server-code-server.yaml"
    assert patch_file in written.files
    assert yaml.safe_load(patch_file.read_text()) == rendered.patches[0].body
    # The Secrets to provide are listed where a GitOps user looks.
    text = (out / "kustomization.yaml").read_text()
    assert "mlflow/mlflow-db-secret" in text and "code-server/mlflow-client-env" in text
    assert written.stale == []


def test_multiline_strings_are_literal_blocks(tmp_path: Path, reference: Settings) -> None:
    write_manifests(render(reference), tmp_path)
    text = (tmp_path / "code-server-configmap-mlflow-auth-helpers.yaml").read_text()
    assert "mlflow-auth.sh: |" in text


def test_rerender_reports_stale_files(tmp_path: Path, reference: Settings) -> None:
    write_manifests(render(reference), tmp_path)
    reference.kubernetes.network_policy = False
    written = write_manifests(render(reference), tmp_path)
    assert written.stale == [tmp_path / "networkpolicy-mlflow.yaml"]


def test_refuses_a_foreign_kustomization(tmp_path: Path, reference: Settings) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [mine.yaml]\n")
    with pytest.raises(ConfigError, match="not written by mlflow-stack"):
        write_manifests(render(reference), tmp_path)


def test_unwritable_directory_is_a_config_error(tmp_path: Path, reference: Settings) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write manifests"):
        write_manifests(render(reference), blocker / "out")


def test_secret_key_round_trip(tmp_path: Path, reference: Settings) -> None:
    assert read_secret_key(tmp_path) is None
    write_manifests(render(reference, include_secrets=True,
                           secret_key=SecretStr(SECRET_KEY_VALUE)), tmp_path)
    key = read_secret_key(tmp_path)
    assert key is not None and key.get_secret_value() == SECRET_KEY_VALUE


def test_corrupt_secret_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret-mlflow-secret-key.yaml").write_text("data: {}\n")
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        read_secret_key(tmp_path)

