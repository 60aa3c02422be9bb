"""Service discovery (the reference's 17_configure_discovery) and code-server integration.

The `thinkube-service-config` ConfigMap keeps the reference's labels and metadata but holds no
credential: variables whose values are secret point at the `mlflow-client-env` Secret. code-server
gets the same Secret plus a ConfigMap with the shell helpers, mounted by a patch of its Deployment
(the reference copied files into a running pod, which a restart loses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from mlflow_stack.client.helpers import helper_text
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import env_names
from mlflow_stack.manifests import labels as lb
from mlflow_stack.manifests.secret_objects import SecretSpec, Value

HELPER_SCRIPTS = ("mlflow-auth.sh", "mlflow-auth.fish")


@dataclass(frozen=True)
class ClientVar:
    name: str
    value: Value
    secret: bool  # the value goes only into the Secret; the ConfigMap refers to it


@dataclass(frozen=True)
class Patch:
    """A strategic-merge (and server-side-apply) patch of an object this tool does not own; it is
    applied only when the target exists, so it is written beside the kustomization, not in it."""

    api_version: str
    kind: str
    namespace: str
    name: str
    body: dict[str, Any]
    description: str


def tracking_uri(settings: Settings) -> str:
    if settings.public_hostname:
        return settings.public_url
    ns = settings.kubernetes.namespace
    return f"http://{lb.APP}.{ns}.svc.cluster.local:{settings.server.port}"


def token_url(settings: Settings) -> str | None:
    a = settings.auth
    if not settings.sso or not a.keycloak_url:
        return None
    return f"{a.keycloak_url}/realms/{a.realm}/protocol/openid-connect/token"


def client_env(settings: Settings) -> list[ClientVar]:
    """The reference's client variables (DESIGN §5 names) plus MLFLOW_TRACKING_AUTH."""
    env = [ClientVar("MLFLOW_TRACKING_URI", tracking_uri(settings), secret=False)]
    url = token_url(settings)
    if url is None:
        return env
    a, s = settings.auth, settings.secrets
    env += [
        ClientVar("MLFLOW_TRACKING_AUTH", "keycloak", secret=False),
        ClientVar("MLFLOW_KEYCLOAK_TOKEN_URL", url, secret=False),
        ClientVar("MLFLOW_KEYCLOAK_CLIENT_ID", a.client_id, secret=False),
        ClientVar("MLFLOW_CLIENT_SECRET", s.oidc_client_secret, secret=True),
    ]
    if a.realm_admin_users:
        # The reference's user/password pair; the user name travels with its password.
        env += [
            ClientVar("MLFLOW_AUTH_USERNAME", a.realm_admin_users[0], secret=True),
            ClientVar("MLFLOW_AUTH_PASSWORD", s.admin_password, secret=True),
        ]
    return env


def _service_document(settings: Settings) -> dict[str, Any]:
    k = settings.kubernetes
    uri = tracking_uri(settings)
    deps = []
    if settings.database.backend == "postgresql":
        deps.append("postgres")
    if settings.artifacts.backend == "s3":
        deps.append("seaweedfs")
    if settings.sso:
        deps.append("keycloak")
    variables: list[dict[str, Any]] = []
    for var in client_env(settings):
        if var.secret:
            variables.append({"name": var.name, "valueFrom": {"secretKeyRef": {
                "name": lb.CLIENT_ENV_SECRET, "namespace": k.namespace, "key": var.name}}})
        else:
            assert isinstance(var.value, str)
            variables.append({"name": var.name, "value": var.value})
    d = settings.discovery
    return {"service": {
        "name": lb.APP,
        "display_name": d.display_name,
        "description": d.description,
        "type": "core",
        "category": d.category,
        "icon": d.icon,
        "endpoints": [{
            "name": "web", "type": "http", "url": uri, "health_url": f"{uri}/health",
            "description": "Web interface", "primary": True,
        }],
        "dependencies": deps,
        "scaling": {"resource_type": "deployment", "resource_name": lb.APP,
                    "namespace": k.namespace, "min_replicas": 1, "can_disable": True},
        "environment_variables": variables,
    }}


def service_configmap(settings: Settings) -> dict[str, Any]:
    labels = {"thinkube.io/managed": "true", "thinkube.io/service-type": "core",
              "thinkube.io/service-name": lb.APP}
    body = yaml.safe_dump(_service_document(settings), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": lb.metadata(settings, settings.discovery.configmap, "discovery",
                                labels=labels),
        "data": {"service.yaml": body},
    }


def plugin_configmap(settings: Settings) -> dict[str, Any]:
    """Kept only because the reference's troubleshooting looks for it: the group-detection
    module is installed in the image and this ConfigMap is not mounted (mounting code from a
    ConfigMap would shadow the tested module)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": lb.metadata(settings, lb.PLUGIN_CONFIGMAP, "server"),
        "data": {"README": (
            "The mlflow_keycloak_groups group-detection module is installed in the server "
            "image (package mlflow-stack); this ConfigMap is kept for compatibility and is "
            "not mounted.\n")},
    }


def _client_secret_spec(settings: Settings, namespace: str) -> SecretSpec:
    env = client_env(settings)
    held = {v.name for v in env if v.secret}
    parts = []
    if "MLFLOW_CLIENT_SECRET" in held:
        parts.append(f"the Keycloak client secret ({env_names('oidc_client_secret')})")
    if "MLFLOW_AUTH_PASSWORD" in held:
        parts.append(f"the user's password ({env_names('admin_password')})")
    how = ("the client environment: " + " and ".join(parts) if parts else
           "the client environment: the tracking URI only (no SSO, nothing secret; "
           "--include-secrets writes it)")
    values: dict[str, Value] = {v.name: v.value for v in env}
    return SecretSpec(lb.CLIENT_ENV_SECRET, namespace, "discovery", how, values=values)


def client_secret_specs(settings: Settings) -> list[SecretSpec]:
    """The client environment with its credentials, in MLflow's namespace (discovery) and in
    code-server's (Secrets can't be read across namespaces)."""
    specs = [_client_secret_spec(settings, settings.kubernetes.namespace)]
    if settings.discovery.code_server:
        specs.append(_client_secret_spec(settings, settings.discovery.code_server_namespace))
    return specs


def helper_script(name: str) -> str:
    return helper_text(name)


def helpers_configmap(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": lb.metadata(settings, lb.HELPERS_CONFIGMAP, "discovery",
                                namespace=settings.discovery.code_server_namespace),
        "data": {name: helper_script(name) for name in HELPER_SCRIPTS},
    }


def code_server_patch(settings: Settings) -> Patch:
    """Env from the client Secret and the helpers at ~/mlflow-auth.{sh,fish}.

    `env` entries (merge key `name`) rather than `envFrom`, which a strategic-merge patch would
    replace wholesale. `optional` so code-server still starts if the Secret is not there yet.
    """
    d = settings.discovery
    env = [{"name": v.name, "valueFrom": {"secretKeyRef": {
        "name": lb.CLIENT_ENV_SECRET, "key": v.name, "optional": True}}}
        for v in client_env(settings)]
    mounts = [{"name": lb.HELPERS_CONFIGMAP, "mountPath": f"{d.code_server_home}/{n}",
               "subPath": n, "readOnly": True} for n in HELPER_SCRIPTS]
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": d.code_server_deployment, "namespace": d.code_server_namespace},
        "spec": {"template": {"spec": {
            "containers": [{"name": d.code_server_container, "env": env,
                            "volumeMounts": mounts}],
            "volumes": [{"name": lb.HELPERS_CONFIGMAP, "configMap": {
                "name": lb.HELPERS_CONFIGMAP, "defaultMode": 0o755, "optional": True}}],
        }}},
    }
    return Patch("apps/v1", "Deployment", d.code_server_namespace, d.code_server_deployment,
                 body, "mounts the MLflow client env and helper scripts into code-server")

