"""The Kubernetes API client from the settings, and API failures as errors a user can act on.

The kubeconfig is `kubernetes.kubeconfig` when set, else what kubectl would use (in-cluster
service account, `$KUBECONFIG`, `~/.kube/config`); `kubernetes.context` picks a context.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ApiError, Client, KubeConfig
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ConfigError as KubeConfigError
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError, StackError
from mlflow_stack.manifests.labels import FIELD_MANAGER
from mlflow_stack.server.tls import shareable

# Gateway API is a CRD, unknown to lightkube's typed models: register it once as generic.
HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute",
                                       "httproutes")
# The Prometheus Operator's kinds (kubernetes.monitoring), registered for resource_of.
ServiceMonitor = create_namespaced_resource("monitoring.coreos.com", "v1", "ServiceMonitor",
                                            "servicemonitors")
PrometheusRule = create_namespaced_resource("monitoring.coreos.com", "v1", "PrometheusRule",
                                            "prometheusrules")
TIMEOUT = httpx2.Timeout(30.0, connect=10.0)


class KubernetesError(StackError):
    """The API server is unreachable, refused us, or rejected an object."""

    exit_code = 1


def tls_context(single: SingleConfig) -> ssl.SSLContext:
    """lightkube's context for the cluster (CA, client certificate), shareable by the threads
    of parallel reads (see mlflow_stack.server.tls)."""
    assert single.user is not None  # lightkube fills in an empty user
    return shareable(verify_cluster(single.cluster, single.user, single.abs_file))


def kubeconfig_path(settings: Settings) -> Path | None:
    """The file the config names, else $KUBECONFIG, else ~/.kube/config (None: in-cluster)."""
    if settings.kubernetes.kubeconfig:
        return settings.kubernetes.kubeconfig.expanduser()
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file() and \
            "KUBECONFIG" not in os.environ:
        return None
    return Path(os.environ.get("KUBECONFIG", "~/.kube/config")).expanduser()


@dataclass
class Kube:
    client: Client
    url: str  # the API server, for messages


def connect(settings: Settings) -> Kube:
    """A client with our field manager. A missing or broken kubeconfig is bad input (exit 2)."""
    path = kubeconfig_path(settings)
    try:
        if path is None:
            config = KubeConfig.from_service_account()
        elif not path.is_file():
            raise ConfigError(
                f"kubeconfig {path} does not exist",
                hint="Set kubernetes.kubeconfig in the config or KUBECONFIG in the environment.")
        else:
            config = KubeConfig.from_file(path)
        single = config.get(settings.kubernetes.context)
    except KubeConfigError as exc:
        where = f"kubeconfig {path}" if path else "the in-cluster service account"
        raise ConfigError(f"{where}: {exc}",
                          hint="Check kubernetes.kubeconfig and kubernetes.context.") from None
    assert single is not None
    transport = httpx2.HTTPTransport(verify=tls_context(single))
    return Kube(Client(config=single, field_manager=FIELD_MANAGER, timeout=TIMEOUT,
                       transport=transport),
                str(single.cluster.server))


def _reason(exc: ApiError) -> str:
    return exc.status.message or exc.status.reason or f"HTTP {exc.status.code}"


@contextmanager
def call(kube: Kube, what: str) -> Iterator[None]:
    """Turn transport failures and refusals into one readable KubernetesError naming `what`."""
    try:
        yield
    except ApiError as exc:
        code = exc.status.code
        if code == 403:
            raise KubernetesError(
                f"Kubernetes refused to {what}: {_reason(exc)}",
                hint="The identity in the kubeconfig lacks a permission; "
                     "docs/rbac/installer-role.yaml lists what the installer needs.") from None
        if code == 401:
            raise KubernetesError(
                f"Kubernetes at {kube.url} did not accept the credentials ({what})",
                hint="The kubeconfig's token or certificate is expired or wrong.") from None
        raise KubernetesError(f"Kubernetes: cannot {what}: {_reason(exc)}") from None
    except httpx2.HTTPStatusError as exc:  # an answer without a Status body
        code = exc.response.status_code
        hint = ("Is the API installed (e.g. the Gateway API CRDs for kubernetes.route: "
                "httproute, the Prometheus Operator's for kubernetes.monitoring)?"
                ) if code == 404 else None
        raise KubernetesError(f"Kubernetes: cannot {what}: HTTP {code}", hint=hint) from None
    except httpx2.TransportError as exc:
        raise KubernetesError(
            f"Kubernetes API server at {kube.url} is unreachable ({what}): "
            f"{type(exc).__name__}: {exc}",
            hint="Check the kubeconfig's server address and that the cluster is up.") from None


def get_or_none(kube: Kube, res: Any, name: str, namespace: str | None = None) -> Any | None:
    """The object, or None when it (its namespace, or its CRD) does not exist; other failures
    raise KubernetesError naming the read."""
    with call(kube, f"read {res.__name__} {namespace + '/' if namespace else ''}{name}"):
        try:
            return kube.client.get(res, name, namespace=namespace)
        except httpx2.HTTPStatusError as exc:  # ApiError, or a 404 without a Status body
            if exc.response.status_code == 404:
                return None
            raise


def resource_of(obj: dict[str, Any]) -> Any:
    """The lightkube resource class of a manifest (HTTPRoute is registered above)."""
    return resource_registry.load(obj["apiVersion"], obj["kind"])


def as_dict(obj: Any) -> dict[str, Any]:
    result: dict[str, Any] = obj.to_dict()
    return result
