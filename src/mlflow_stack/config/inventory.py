"""The reference's flat Ansible inventory variables, mapped onto the settings tree.

An existing inventory works unchanged: the variables below are read, everything else in a
larger inventory is ignored (and listed on request).
"""

from __future__ import annotations

from typing import Any

# inventory variable -> dotted settings path
INVENTORY_MAP: dict[str, str] = {
    "mlflow_namespace": "kubernetes.namespace",
    "mlflow_hostname": "server.hostname",
    "mlflow_capacity": "storage.capacity",
    "mlflow_db_name": "database.name",
    "mlflow_db_user": "database.user",
    "mlflow_artifacts_bucket": "artifacts.bucket",
    "mlflow_client_id": "auth.client_id",
    "storage_class_name": "storage.storage_class",
    "postgres_namespace": "database.namespace",
    "postgres_release_name": "database.release_name",
    "postgres_hostname": "database.host",
    "seaweedfs_namespace": "artifacts.credentials_namespace",
    "seaweedfs_s3_secret": "artifacts.credentials_secret",
    "seaweedfs_s3_hostname": "artifacts.endpoint_url",
    "keycloak_url": "auth.keycloak_url",
    "keycloak_realm": "auth.realm",
    "admin_username": "auth.admin_username",
    "auth_realm_username": "auth.realm_admin_users",
    "harbor_registry": "registry.host",
    "harbor_project": "registry.project",
    "harbor_robot_name": "registry.robot_name",
    "domain_name": "domain",
    "kubeconfig": "kubernetes.kubeconfig",
    "kubectl_bin": "kubernetes.kubectl_bin",
    "primary_ingress_class": "kubernetes.ingress_class",
    "ingress_namespace": "kubernetes.ingress_namespace",
}

# What the reference deploys, whatever the variables say: PostgreSQL, S3 and Keycloak SSO.
_REFERENCE_BACKENDS: dict[str, dict[str, Any]] = {
    "database": {"backend": "postgresql"},
    "artifacts": {"backend": "s3"},
    "auth": {"provider": "keycloak"},
}

PATH_TO_VARIABLE = {path: var for var, path in INVENTORY_MAP.items()}


def looks_like_inventory(data: dict[str, Any]) -> bool:
    """An inventory has at least one reference variable at the top (or under all.vars)."""
    return any(key in INVENTORY_MAP for key in flatten_inventory(data))


def flatten_inventory(data: dict[str, Any]) -> dict[str, Any]:
    """Accept a flat vars file or an Ansible YAML inventory (`all: {vars: ...}`)."""
    all_group = data.get("all")
    if isinstance(all_group, dict) and isinstance(all_group.get("vars"), dict):
        merged = {k: v for k, v in data.items() if k != "all"}
        merged.update(all_group["vars"])
        return merged
    return data


def _convert(variable: str, value: Any) -> Any:
    if variable == "seaweedfs_s3_hostname" and isinstance(value, str) and "://" not in value:
        return f"https://{value}"
    if variable == "auth_realm_username" and isinstance(value, str):
        return [value]
    return value


def inventory_to_native(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Native nested settings for an inventory, and the sorted keys that were ignored."""
    flat = flatten_inventory(data)
    native: dict[str, Any] = {section: dict(values) for section, values in
                              _REFERENCE_BACKENDS.items()}
    ignored: list[str] = []
    for key, value in flat.items():
        path = INVENTORY_MAP.get(key)
        if path is None:
            ignored.append(str(key))
            continue
        node = native
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _convert(key, value)
    return native, sorted(ignored)
