"""How the platform's pods fit a cluster: placement, scaling, extra env and volumes, metadata,
a CA bundle, and the namespace's Pod Security level (issue 17 §1 and §5)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlflow_stack.config.kube_objects import (
    Affinity,
    EnvVar,
    Toleration,
    TopologySpread,
    Volume,
    VolumeMount,
)
from mlflow_stack.config.section import Section
from mlflow_stack.config.types import ConfigMapName, LabelKey, LabelValue, PriorityClassName


class AutoscalingSettings(Section):
    """A HorizontalPodAutoscaler for the server; `apply` then leaves `replicas` to it."""

    enabled: bool = False
    min_replicas: int = Field(2, ge=1, le=100, description="Fewest server pods.")
    max_replicas: int = Field(4, ge=1, le=100, description="Most server pods.")
    cpu_utilization: int | None = Field(
        80, ge=1, le=1000, description="Target average CPU, % of kubernetes.requests.cpu "
        "(null: don't scale on CPU).")
    memory_utilization: int | None = Field(
        None, ge=1, le=1000, description="Target average memory, % of "
        "kubernetes.requests.memory (null: don't scale on memory).")

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.min_replicas ({self.min_replicas}) is above autoscaling."
                f"max_replicas ({self.max_replicas}): expected min_replicas <= max_replicas")
        if self.enabled and self.cpu_utilization is None and self.memory_utilization is None:
            raise ValueError("autoscaling needs a target: set autoscaling.cpu_utilization "
                             "and/or autoscaling.memory_utilization")
        return self


class ObjectMetadata(Section):
    """Extra labels and annotations (the platform's own labels win on a clash)."""

    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    annotations: dict[LabelKey, str] = Field(default_factory=dict)


class PodSettings(ObjectMetadata):
    """Where and how the platform's pods (server, migration Job, scheduled jobs) run."""

    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: Affinity | None = None
    topology_spread: list[TopologySpread] | None = Field(
        None, description="The server's topologySpreadConstraints (default with more than one "
        "replica: spread over nodes, best effort).")
    priority_class: PriorityClassName | None = Field(
        None, description="priorityClassName of every pod.")
    extra_env: list[EnvVar] = Field(
        default_factory=list, description="Environment variables added to every container "
        "(not the ones the platform sets).")
    extra_volumes: list[Volume] = Field(default_factory=list)
    extra_volume_mounts: list[VolumeMount] = Field(
        default_factory=list, description="Mounts of extra_volumes in every container.")

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> PodSettings:
        names = [v["name"] for v in self.extra_volumes]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"pod.extra_volumes: the volume name {name!r} is used twice")
            if name in RESERVED_VOLUMES:
                raise ValueError(f"pod.extra_volumes: {name!r} is a volume of the platform's "
                                 f"own (reserved: {', '.join(sorted(RESERVED_VOLUMES))})")
        for mount in self.extra_volume_mounts:
            if mount["name"] not in names:
                raise ValueError(
                    f"pod.extra_volume_mounts: {mount['name']!r} is not one of "
                    f"pod.extra_volumes ({', '.join(names) or 'none declared'})")
        seen: set[str] = set()
        for var in self.extra_env:
            if var["name"] in seen:
                raise ValueError(f"pod.extra_env: {var['name']!r} is set twice")
            seen.add(var["name"])
        return self


# Volumes the platform's pods already have (manifests/workload.py).
RESERVED_VOLUMES = frozenset({"tmp", "home", "prometheus", "local-storage", "models",
                              "ca-bundle"})


class CaBundleSettings(Section):
    """Certificates the pods trust for S3 and Keycloak, from a ConfigMap mounted read-only."""

    configmap: ConfigMapName | None = Field(
        None, description="An existing ConfigMap holding the bundle (e.g. trust-manager's); "
        "default: one apply creates from artifacts.ca_bundle / auth.ca_bundle when set.")
    key: str = Field("ca.crt", pattern=r"^[-._a-zA-Z0-9]{1,253}$",
                     description="The ConfigMap's key holding the PEM bundle.")


PodSecurityLevel = Literal["restricted", "baseline", "privileged", "none"]
