"""Helpers for the Kubernetes rendering tests: settings with distinctive secrets, object lookup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mlflow_stack.config.loader import load_config
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets

REFERENCE_INVENTORY = Path(__file__).parents[1] / "data" / "reference-inventory.yaml"

# Distinctive values: a leak shows up as one of these strings (or its base64) in the output.
SECRET_VALUES = {
    "admin_password": "AdminPw-7f3c91e2-leakcheck",
    "db_password": "DbPw-52ad0b77-leakcheck",
    "s3_access_key_id": "S3KeyId-0c4e9f1a-leakcheck",
    "s3_secret_access_key": "S3Secret-9b7e22d4-leakcheck",
    "oidc_client_secret": "OidcSecret-3d5f8a60-leakcheck",
    "harbor_robot_token": "HarborTok-e81b4c07-leakcheck",
}
SECRET_KEY_VALUE = "SessionKey-6a2d9e13-leakcheck"


def all_secrets() -> Secrets:
    values: dict[str, Any] = {k: SecretStr(v) for k, v in SECRET_VALUES.items()}
    return Secrets.model_construct(**values)


def reference_settings(secrets: Secrets | None = None) -> Settings:
    loaded = load_config(REFERENCE_INVENTORY, secrets=secrets or Secrets.none(),
                         require_secrets=False)
    return loaded.settings


def settings_with(data: dict[str, Any], secrets: Secrets | None = None) -> Settings:
    return Settings.model_validate(data).model_copy(
        update={"secrets": secrets or Secrets.none()})


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind
               and (name is None or o["metadata"]["name"] == name)
               and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return [o["kind"] for o in objects]


def secret_texts() -> list[str]:
    """Every distinctive secret value, plain and base64-encoded (as a Secret's data holds it)."""
    import base64

    values = [*SECRET_VALUES.values(), SECRET_KEY_VALUE]
    return values + [base64.b64encode(v.encode()).decode() for v in values]


# kubernetes-validate ships no Gateway API schemas (they are CRDs, not core Kubernetes), so an
# HTTPRoute is validated against this transcription of the gateway.networking.k8s.io/v1 HTTPRoute
# CRD schema (Gateway API v1.2, standard channel), for the fields mlflow-stack renders, with
# unknown fields refused as the strict Kubernetes schemas do.
_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
_HOSTNAME = {"type": "string", "maxLength": 253,
             "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
HTTPROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {
                "name": _NAME, "namespace": _NAME,
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "parentRefs": {"type": "array", "maxItems": 32, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {
                        "group": {"type": "string", "maxLength": 253},
                        "kind": {"type": "string", "minLength": 1, "maxLength": 63},
                        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
                        "name": _NAME,
                        "sectionName": {"type": "string", "minLength": 1, "maxLength": 253},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    }}},
                "hostnames": {"type": "array", "maxItems": 16, "items": _HOSTNAME},
                "rules": {"type": "array", "maxItems": 16, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "matches": {"type": "array", "maxItems": 64, "items": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"path": {
                                "type": "object", "additionalProperties": False,
                                "properties": {
                                    "type": {"enum": ["Exact", "PathPrefix",
                                                      "RegularExpression"]},
                                    "value": {"type": "string", "maxLength": 1024},
                                }}}}},
                        "backendRefs": {"type": "array", "maxItems": 16, "items": {
                            "type": "object", "additionalProperties": False,
                            "required": ["name"],
                            "properties": {
                                "group": {"type": "string"}, "kind": {"type": "string"},
                                "name": _NAME, "namespace": {"type": "string"},
                                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                "weight": {"type": "integer", "minimum": 0},
                            }}},
                        "timeouts": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"request": _DURATION, "backendRequest": _DURATION},
                        },
                    }}},
            },
        },
    },
}


def validate_strict(obj: dict[str, Any], version: str) -> None:
    """Strict schema validation for Kubernetes `version`; raises on any violation."""
    import jsonschema
    import kubernetes_validate

    if obj["apiVersion"].startswith("gateway.networking.k8s.io/"):
        jsonschema.validate(obj, HTTPROUTE_SCHEMA)
        return
    kubernetes_validate.validate(obj, version, strict=True)
