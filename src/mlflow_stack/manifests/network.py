"""Service, Ingress or Gateway API HTTPRoute, and the NetworkPolicy of the server."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.manifests import labels as lb

_NS_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace


def service(settings: Settings) -> dict[str, Any]:
    port = settings.server.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": lb.metadata(
            settings, lb.APP, "server",
            labels={**settings.kubernetes.service.labels, **lb.server_selector()},
            annotations=dict(settings.kubernetes.service.annotations) or None),
        "spec": {
            "type": "ClusterIP",
            "selector": lb.server_selector(),
            "ports": [{"name": lb.PORT_NAME, "port": port, "targetPort": lb.PORT_NAME,
                       "protocol": "TCP"}],
        },
    }


def uses_tls(settings: Settings) -> bool:
    return settings.server.public_scheme == "https"


def ingress(settings: Settings, host: str) -> dict[str, Any]:
    k = settings.kubernetes
    timeout = str(k.proxy_timeout)
    annotations = {
        # Model uploads are large: no body limit, no buffering of the request, long timeouts.
        "nginx.ingress.kubernetes.io/proxy-body-size": "0",
        "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-send-timeout": timeout,
    }
    spec: dict[str, Any] = {
        "ingressClassName": k.ingress_class,
        "rules": [{"host": host, "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": lb.APP, "port": {"name": lb.PORT_NAME}}},
        }]}}],
    }
    if uses_tls(settings):
        spec["tls"] = [{"hosts": [host], "secretName": k.tls_secret}]
        # Traefik serves an Ingress's `tls` only on routers marked for TLS (or entry points
        # configured with TLS by default); other controllers ignore the annotation.
        annotations["traefik.ingress.kubernetes.io/router.tls"] = "true"
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": lb.metadata(settings, lb.APP, "server", annotations=annotations),
        "spec": spec,
    }


def http_route(settings: Settings, host: str) -> dict[str, Any]:
    """Gateway API route. TLS is the Gateway listener's; body size limits are implementation
    specific (Gateway API has no field for them)."""
    k = settings.kubernetes
    if not k.gateway_name:
        raise ConfigError("kubernetes.route is httproute: set kubernetes.gateway_name (and "
                          "kubernetes.gateway_namespace if the Gateway is in another namespace)")
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                              "name": k.gateway_name}
    if k.gateway_namespace:
        parent["namespace"] = k.gateway_namespace
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": lb.metadata(settings, lb.APP, "server"),
        "spec": {
            "parentRefs": [parent],
            "hostnames": [host],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": lb.APP, "port": settings.server.port}],
                "timeouts": {"request": f"{k.proxy_timeout}s"},
            }],
        },
    }


def _url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def network_policy(settings: Settings) -> dict[str, Any]:
    """Ingress only from the ingress controller (or Gateway) namespace, and from the monitoring
    namespace's pods when the config names one (Prometheus scrapes each pod's IP; the server
    lets only exactly GET /metrics through with such a Host, server/patches/metrics_scrape.py);
    egress only to DNS, the database, S3 and Keycloak. S3 and Keycloak are usually reached by
    their public names, which resolve outside any namespace, so those rules are by port."""
    k = settings.kubernetes
    front_ns = (k.gateway_namespace or k.namespace) if k.route == "httproute" \
        else k.ingress_namespace
    server_port = [{"protocol": "TCP", "port": settings.server.port}]
    ingress_rules = [{
        "from": [{"namespaceSelector": {"matchLabels": {_NS_LABEL: front_ns}}}],
        "ports": server_port,
    }]
    if k.metrics_namespace:
        # A rule of its own: the port is the server's (a NetworkPolicy cannot name a path).
        ingress_rules.append({
            "from": [{"namespaceSelector": {"matchLabels": {_NS_LABEL: k.metrics_namespace}}}],
            "ports": [dict(p) for p in server_port],
        })
    egress: list[dict[str, Any]] = [{
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }]
    db = settings.database
    if db.backend == "postgresql":
        rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": db.port}]}
        if db.namespace:
            rule["to"] = [{"namespaceSelector": {"matchLabels": {_NS_LABEL: db.namespace}}}]
        egress.append(rule)
    ports: set[int] = set()
    if settings.artifacts.backend == "s3":
        ports.add(_url_port(settings.artifacts.endpoint_url or "https://s3.amazonaws.com"))
    if settings.sso and settings.auth.keycloak_url:
        ports.add(_url_port(settings.auth.keycloak_url))
    if ports:
        egress.append({"ports": [{"protocol": "TCP", "port": p} for p in sorted(ports)]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": lb.metadata(settings, lb.NETWORK_POLICY, "server"),
        "spec": {
            "podSelector": {"matchLabels": lb.server_selector()},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress_rules,
            "egress": egress,
        },
    }
