"""Config values that become Kubernetes names: each held to the API server's rule for its kind.

The rules are checked three ways: on their own, on every settings field (and inventory variable)
that names a Kubernetes object, and against a real kube-apiserver, whose verdict is the truth.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from harness.kubeapi import KubeAPIServer
from mlflow_stack.config.loader import parse_settings
from mlflow_stack.config.model import Settings
from mlflow_stack.config.types import (
    HELM_RELEASE,
    LABEL_KEY,
    LABEL_VALUE,
    RFC1123_LABEL,
    RFC1123_SUBDOMAIN,
    NameRule,
    check_name,
)
from mlflow_stack.errors import ConfigError

LABEL_RULE = "RFC 1123 label: at most 63 lower-case letters, digits or '-'"
SUBDOMAIN_RULE = "RFC 1123 subdomain: at most 253 lower-case letters, digits, '-' or '.'"

# Every settings field that becomes a Kubernetes object name or reference, with its rule.
NAME_FIELDS: dict[str, tuple[str, str]] = {
    "kubernetes.namespace": ("Kubernetes namespace name", LABEL_RULE),
    "kubernetes.tls_source_namespace": ("Kubernetes namespace name", LABEL_RULE),
    "kubernetes.ingress_namespace": ("Kubernetes namespace name", LABEL_RULE),
    "kubernetes.gateway_namespace": ("Kubernetes namespace name", LABEL_RULE),
    "kubernetes.metrics_namespace": ("Kubernetes namespace name", LABEL_RULE),
    "kubernetes.monitoring.service_monitor.namespace": ("Kubernetes namespace name", LABEL_RULE),
    "kubernetes.monitoring.alerts.namespace": ("Kubernetes namespace name", LABEL_RULE),
    "database.namespace": ("Kubernetes namespace name", LABEL_RULE),
    "artifacts.credentials_namespace": ("Kubernetes namespace name", LABEL_RULE),
    "discovery.code_server_namespace": ("Kubernetes namespace name", LABEL_RULE),
    "discovery.code_server_container": ("Kubernetes container name", LABEL_RULE),
    "kubernetes.tls_secret": ("Kubernetes Secret name", SUBDOMAIN_RULE),
    "kubernetes.tls_source_secret": ("Kubernetes Secret name", SUBDOMAIN_RULE),
    "artifacts.credentials_secret": ("Kubernetes Secret name", SUBDOMAIN_RULE),
    "registry.pull_secret": ("Kubernetes Secret name", SUBDOMAIN_RULE),
    "kubernetes.existing_secrets.pull_secret": ("Kubernetes Secret name", SUBDOMAIN_RULE),
    "kubernetes.existing_secrets.tls": ("Kubernetes Secret name", SUBDOMAIN_RULE),
    "discovery.configmap": ("Kubernetes ConfigMap name", SUBDOMAIN_RULE),
    "kubernetes.ca_bundle.configmap": ("Kubernetes ConfigMap name", SUBDOMAIN_RULE),
    "kubernetes.pod.priority_class": ("Kubernetes PriorityClass name", SUBDOMAIN_RULE),
    "storage.storage_class": ("Kubernetes StorageClass name", SUBDOMAIN_RULE),
    "storage.models.storage_class": ("Kubernetes StorageClass name", SUBDOMAIN_RULE),
    "kubernetes.ingress_class": ("Kubernetes IngressClass name", SUBDOMAIN_RULE),
    "storage.local_pvc_name": ("Kubernetes PersistentVolumeClaim name", SUBDOMAIN_RULE),
    "storage.models.name": ("Kubernetes PersistentVolumeClaim name", SUBDOMAIN_RULE),
    "discovery.code_server_deployment": ("Kubernetes Deployment name", SUBDOMAIN_RULE),
    "kubernetes.gateway_name": ("Gateway API Gateway name", SUBDOMAIN_RULE),
    "database.release_name": ("Helm release name", "Helm's rule: at most 53"),
}

# The reference inventory's variables that name Kubernetes objects.
INVENTORY_NAME_VARIABLES = {
    "mlflow_namespace": LABEL_RULE,
    "postgres_namespace": LABEL_RULE,
    "seaweedfs_namespace": LABEL_RULE,
    "ingress_namespace": LABEL_RULE,
    "storage_class_name": SUBDOMAIN_RULE,
    "primary_ingress_class": SUBDOMAIN_RULE,
    "seaweedfs_s3_secret": SUBDOMAIN_RULE,
    "postgres_release_name": "Helm's rule",
}

# Field names that mean "a Kubernetes name": a new field called so must get a name type.
_NAME_LIKE = ("namespace", "secret", "configmap", "storage_class", "ingress_class", "pvc_name",
              "deployment", "container", "gateway_name", "release_name", "service_account",
              "priority_class")


def nested(dotted: str, value: object) -> dict[str, Any]:
    data: dict[str, Any] = {}
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return data


def accepts(dotted: str, value: str) -> bool:
    try:
        Settings.model_validate(nested(dotted, value))
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("rule", "good", "bad"), [
    (RFC1123_LABEL, ["a", "0", "mlflow", "a-b", "1-x", "x" * 63],
     ["", "-a", "a-", "a.b", "a_b", "MLflow", "a b", "é", "x" * 64, "mlflow\n"]),
    (RFC1123_SUBDOMAIN, ["a", "a.b", "a-b.c-d", "x" * 64, "x" * 253],
     ["", ".a", "a.", "a..b", "a.-b", "a-.b", "A.b", "a_b", "x" * 254, "a/b", "mlflow\n"]),
    (HELM_RELEASE, ["postgresql-official", "a.b", "x" * 53], ["x" * 54, "Pg", "pg_1", ""]),
    (LABEL_VALUE, ["", "a", "A_b.c-D", "x" * 63], ["_a", "a_", "-a", "a b", "a/b", "x" * 64]),
    (LABEL_KEY, ["a", "A_b.c", "app.kubernetes.io/name", "example.com/A_b", "x" * 63,
                 "p" * 253 + "/n"],
     ["", "_a", "x" * 64, "/a", "a/", "a/b/c", "Example.com/a", "a_b/c", "p" * 254 + "/n",
      "example.com/" + "x" * 64]),
])
def test_rules(rule: NameRule, good: list[str], bad: list[str]) -> None:
    assert [v for v in good if not rule.matches(v)] == []
    assert [v for v in bad if rule.matches(v)] == []


def test_message_names_value_kind_and_rule() -> None:
    with pytest.raises(ValueError) as info:
        check_name("seaweedfs_s3", RFC1123_SUBDOMAIN, "Kubernetes Secret name")
    assert str(info.value) == (
        "'seaweedfs_s3' is not a valid Kubernetes Secret name: expected an RFC 1123 subdomain: "
        "at most 253 lower-case letters, digits, '-' or '.', starting and ending with a letter "
        "or digit")


def test_message_hints_lower_case_and_length() -> None:
    with pytest.raises(ValueError, match=r"lower case: use 'mlflow'\)$"):
        check_name("MLflow", RFC1123_LABEL, "Kubernetes namespace name")
    with pytest.raises(ValueError, match=r"\(it has 64 characters\)$"):
        check_name("x" * 64, RFC1123_LABEL, "Kubernetes namespace name")
    with pytest.raises(ValueError) as info:  # label values may be capitalised: no such hint
        check_name("A_", LABEL_VALUE, "Kubernetes label value")
    assert "lower case" not in str(info.value)


def test_defaults_satisfy_the_rules() -> None:
    s = Settings()
    for dotted in NAME_FIELDS:
        node: Any = s
        for part in dotted.split("."):
            node = getattr(node, part)
        if node is not None:
            assert accepts(dotted, node), dotted


@pytest.mark.parametrize("dotted", sorted(NAME_FIELDS))
def test_every_name_field_is_checked_on_load(dotted: str) -> None:
    kind, rule = NAME_FIELDS[dotted]
    with pytest.raises(ConfigError) as info:
        parse_settings(nested(dotted, "Bad_Name"), "mlflow-stack.yaml")
    assert info.value.exit_code == 2
    assert info.value.message.startswith(
        f"mlflow-stack.yaml: {dotted}: 'Bad_Name' is not a valid {kind}: expected ")
    assert rule in info.value.message
    assert "\n" not in info.value.message


def _name_like_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    found = []
    for name, info in model.model_fields.items():
        if info.exclude:  # Settings.secrets: secret values from the environment, not names
            continue
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            found += _name_like_fields(sub, f"{prefix}{name}.")
        elif name.endswith(_NAME_LIKE):
            found.append(f"{prefix}{name}")
    return found


def test_no_name_like_field_is_left_unchecked() -> None:
    """A new `*_secret` or `*_namespace` setting must get a name type (and a line above)."""
    fields = _name_like_fields(Settings)
    assert "registry.pull_secret" in fields and "kubernetes.namespace" in fields
    assert sorted(set(fields) - set(NAME_FIELDS)) == []
    assert [f for f in fields if accepts(f, "Bad_Name")] == []


@pytest.mark.parametrize("variable", sorted(INVENTORY_NAME_VARIABLES))
def test_inventory_variables_are_checked_and_named(variable: str) -> None:
    data = {"keycloak_url": "https://kc.example.com", "postgres_hostname": "pg.example.com",
            variable: "Bad_Name"}
    with pytest.raises(ConfigError) as info:
        parse_settings(data, "inventory.yaml")
    assert info.value.message.startswith(f"inventory.yaml: {variable}: 'Bad_Name' is not a valid")
    assert INVENTORY_NAME_VARIABLES[variable] in info.value.message


def test_inventory_template_is_refused_with_a_hint() -> None:
    data = {"keycloak_url": "https://kc.example.com", "postgres_hostname": "pg.example.com",
            "mlflow_namespace": "{{ namespace }}"}
    with pytest.raises(ConfigError, match="Ansible templates are not expanded"):
        parse_settings(data, "inventory.yaml")


# --------------------------------------------------------------------------------------------
# The real API server's verdict

_CANDIDATES = ["mlflow", "a", "0", "a-b", "a.b", "a..b", ".a", "a.", "-a", "a-", "a.-b", "MLflow",
               "a_b", "a b", "", "é", "x" * 63, "x" * 64, "x" * 253, "x" * 254, "a/b", "mlflow\n"]
_LABEL_VALUES = ["", "a", "A_b.c-D", "_a", "a_", "-a", "a b", "a/b", "x" * 63, "x" * 64]
_LABEL_KEYS = ["a", "A_b.c", "app.kubernetes.io/name", "example.com/A_b", "Example.com/a",
               "a/b/c", "/a", "a/", "_a", "x" * 63, "x" * 64, "p" * 253 + "/n", "p" * 254 + "/n"]


def _container(name: str = "c") -> dict[str, Any]:
    return {"name": name, "image": "busybox"}


def _deployment(name: str = "d", container: str = "c") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"labels": {"app": "x"}},
                                  "spec": {"containers": [_container(container)]}}}}


def _pvc(name: str = "p", storage_class: str = "standard") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                     "resources": {"requests": {"storage": "1Gi"}}}}


# settings field -> (API path, the object that carries the value there)
_API_CHECKS: dict[str, tuple[str, Any]] = {
    "kubernetes.namespace": ("/api/v1/namespaces", lambda v: {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": v}}),
    "kubernetes.tls_secret": ("/api/v1/namespaces/default/secrets", lambda v: {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": v}}),
    "discovery.configmap": ("/api/v1/namespaces/default/configmaps", lambda v: {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": v}}),
    "storage.storage_class": ("/apis/storage.k8s.io/v1/storageclasses", lambda v: {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": v},
        "provisioner": "example.com/x"}),
    "kubernetes.ingress_class": ("/apis/networking.k8s.io/v1/ingressclasses", lambda v: {
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": v},
        "spec": {"controller": "example.com/x"}}),
    "storage.local_pvc_name": ("/api/v1/namespaces/default/persistentvolumeclaims", _pvc),
    "storage.models.storage_class": ("/api/v1/namespaces/default/persistentvolumeclaims",
                                     lambda v: _pvc(storage_class=v)),
    "discovery.code_server_deployment": ("/apis/apps/v1/namespaces/default/deployments",
                                         _deployment),
    "discovery.code_server_container": ("/apis/apps/v1/namespaces/default/deployments",
                                        lambda v: _deployment(container=v)),
}

# Where we refuse on purpose what the API server takes: a PVC's storageClassName "" means "no
# class, bind a pre-made volume", which neither apply nor doctor (which looks the class up) do.
_STRICTER = {("storage.models.storage_class", "")}


def _api_accepts(kube_api: KubeAPIServer, path: str, body: dict[str, Any]) -> bool:
    with kube_api.admin_http() as http:
        response = http.post(path, params={"dryRun": "All"}, json=body)
    if response.status_code in (200, 201):
        return True
    assert response.status_code == 422, response.text  # Invalid: anything else is a test fault
    return False


@pytest.mark.integration
def test_rules_agree_with_the_api_server(kube_api: KubeAPIServer) -> None:
    disagreements = []
    for dotted, (path, make) in _API_CHECKS.items():
        for value in _CANDIDATES:
            ours, theirs = accepts(dotted, value), _api_accepts(kube_api, path, make(value))
            if ours != theirs and (dotted, value) not in _STRICTER:
                disagreements.append((dotted, value, f"ours {ours}, API server {theirs}"))
    configmaps = "/api/v1/namespaces/default/configmaps"
    for value in _LABEL_VALUES:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "l", "labels": {"k": value}}}
        if LABEL_VALUE.matches(value) != _api_accepts(kube_api, configmaps, body):
            disagreements.append(("label value", value, ""))
    for key in _LABEL_KEYS:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "l", "labels": {key: "v"}}}
        if LABEL_KEY.matches(key) != _api_accepts(kube_api, configmaps, body):
            disagreements.append(("label key", key, ""))
    assert disagreements == []
