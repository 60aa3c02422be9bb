"""Pod placement, autoscaling, CA bundle and Pod Security settings: each bad value is refused
at load (exit 2) naming the field and what is expected."""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_stack.config.loader import parse_settings
from mlflow_stack.errors import ConfigError


def refused(kubernetes: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings({"kubernetes": kubernetes}, "mlflow-stack.yaml")
    assert info.value.exit_code == 2
    return info.value.message


def test_hpa_min_above_max_is_refused() -> None:
    message = refused({"autoscaling": {"enabled": True, "min_replicas": 5, "max_replicas": 3}})
    assert "kubernetes.autoscaling" in message
    assert "min_replicas (5) is above autoscaling.max_replicas (3)" in message


def test_hpa_without_a_target_is_refused() -> None:
    message = refused({"autoscaling": {"enabled": True, "cpu_utilization": None}})
    assert "set autoscaling.cpu_utilization and/or autoscaling.memory_utilization" in message


def test_a_misspelt_affinity_field_gets_a_did_you_mean() -> None:
    message = refused({"pod": {"affinity": {"nodeAfinity": {}}}})
    assert message == ("mlflow-stack.yaml: kubernetes.pod.affinity: not a valid affinity: "
                       "unknown field 'nodeAfinity'; did you mean 'nodeAffinity'?")
    deep = refused({"pod": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "valuez": ["a"]}]}]}}}}})
    assert ("unknown field 'nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution."
            "nodeSelectorTerms[0].matchExpressions[0].valuez'; did you mean 'values'?") in deep


def test_a_toleration_of_the_wrong_type_names_the_field() -> None:
    message = refused({"pod": {"tolerations": [{"key": "gpu", "tolerationSeconds": "soon"}]}})
    assert "kubernetes.pod.tolerations.0" in message
    assert "tolerationSeconds" in message and "int" in message


def test_volumes_need_names_and_mounts_need_declared_volumes() -> None:
    assert "missing required field `name`" in refused(
        {"pod": {"extra_volumes": [{"emptyDir": {}}]}})
    message = refused({"pod": {"extra_volumes": [{"name": "cache", "emptyDir": {}}],
                               "extra_volume_mounts": [{"name": "cahce",
                                                        "mountPath": "/cache"}]}})
    assert "'cahce' is not one of pod.extra_volumes (cache)" in message
    assert "is a volume of the platform's own" in refused(
        {"pod": {"extra_volumes": [{"name": "tmp", "emptyDir": {}}]}})


def test_label_keys_and_values_follow_kubernetes_rules() -> None:
    assert "not a valid Kubernetes label key" in refused(
        {"pod": {"node_selector": {"bad key": "x"}}})
    assert "not a valid Kubernetes label value" in refused(
        {"service": {"labels": {"team": "ml team"}}})


def test_pod_security_level_is_one_of_the_admission_levels() -> None:
    message = refused({"pod_security": "strict"})
    assert "kubernetes.pod_security" in message and "'restricted'" in message


def test_ca_bundle_key_is_a_configmap_key() -> None:
    assert "kubernetes.ca_bundle.key" in refused({"ca_bundle": {"configmap": "ca",
                                                                "key": "ca crt"}})


def test_valid_settings_load() -> None:
    s = parse_settings({"kubernetes": {
        "autoscaling": {"enabled": True, "min_replicas": 2, "max_replicas": 6,
                        "memory_utilization": 90},
        "pod": {"node_selector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml",
                                 "effect": "NoSchedule"}],
                "priority_class": "platform-high",
                "extra_env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]},
        "ca_bundle": {"configmap": "corp-ca", "key": "bundle.pem"},
        "pod_security": "baseline"}}, "mlflow-stack.yaml").settings
    assert s.kubernetes.autoscaling.max_replicas == 6
    assert s.kubernetes.pod.tolerations[0]["value"] == "ml"
