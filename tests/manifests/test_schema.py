"""Every rendered object passes strict schema validation for Kubernetes 1.31 and 1.34.

kubernetes-validate has no Gateway API schemas (HTTPRoute is a CRD): that is asserted, so a
release that adds them is noticed, and the HTTPRoute is checked against a transcription of the
CRD's schema (harness.kube.HTTPROUTE_SCHEMA) instead.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from pydantic import SecretStr

from harness.kube import (
    HTTPROUTE_SCHEMA,
    SECRET_KEY_VALUE,
    all_secrets,
    find,
    reference_settings,
    settings_with,
    validate_strict,
)
from mlflow_stack.config.model import Settings
from mlflow_stack.manifests.render import render

VERSIONS = ["1.31", "1.34"]


def _configs() -> dict[str, tuple[Settings, bool]]:
    ha = reference_settings(all_secrets())
    ha.kubernetes.replicas = 3
    return {
        "reference": (reference_settings(), False),
        "reference-with-secrets": (reference_settings(all_secrets()), True),
        "replicas-3": (ha, True),
        "defaults": (Settings(), False),
        "httproute": (settings_with({
            "domain": "example.com",
            "database": {"backend": "postgresql", "host": "db.example.com"},
            "artifacts": {"backend": "s3"},
            "kubernetes": {"route": "httproute", "gateway_name": "gw",
                           "gateway_namespace": "gateways"}}), False),
    }


CONFIGS = _configs()


def _all(settings: Settings, include: bool) -> list[dict[str, Any]]:
    rendered = render(settings, include_secrets=include, secret_key=SecretStr(SECRET_KEY_VALUE))
    return rendered.objects


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_objects_pass_strict_validation(config: str, version: str) -> None:
    settings, include = CONFIGS[config]
    objects = _all(settings, include)
    assert objects
    for obj in objects:
        try:
            validate_strict(obj, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} invalid for {version}: {exc}")


@pytest.mark.parametrize("version", VERSIONS)
def test_code_server_patch_is_valid_once_merged(version: str) -> None:
    """The patch is partial; merged into a minimal code-server Deployment it must validate."""
    rendered = render(reference_settings())
    patch = rendered.patches[0].body
    container = dict(patch["spec"]["template"]["spec"]["containers"][0])
    container["image"] = "codercom/code-server:4"
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": patch["metadata"],
        "spec": {"selector": {"matchLabels": {"app": "code-server"}},
                 "template": {"metadata": {"labels": {"app": "code-server"}},
                              "spec": {**patch["spec"]["template"]["spec"],
                                       "containers": [container]}}},
    }
    kubernetes_validate.validate(deployment, version, strict=True)


def test_validation_is_strict() -> None:
    """The checker refuses an unknown field (so a pass means something)."""
    svc = find(_all(*CONFIGS["reference"]), "Service")
    bad = {**svc, "spec": {**svc["spec"], "porst": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.34", strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_httproute_schema_is_not_in_kubernetes_validate(version: str) -> None:
    route = find(_all(*CONFIGS["httproute"]), "HTTPRoute")
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(route, version, strict=True)


def test_httproute_schema_is_strict() -> None:
    route = find(_all(*CONFIGS["httproute"]), "HTTPRoute")
    jsonschema.validate(route, HTTPROUTE_SCHEMA)
    bad_rule = {**route["spec"]["rules"][0], "timeouts": {"request": "1 hour"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**route, "spec": {**route["spec"], "rules": [bad_rule]}},
                            HTTPROUTE_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**route, "spec": {**route["spec"], "hostname": ["x"]}},
                            HTTPROUTE_SCHEMA)
