"""A real ingress controller on the real node (tests/harness/node_ingress.py): Traefik routes by
host name to a Service's pods, through (a) an Ingress of class `traefik` whose `tls` names a
Secret it must serve, and (b) an HTTPRoute attached to the Gateway. Clients run inside the
node's network and connect to the controller's address with the route's Host (and SNI), as a
client that resolved the name there would.

Traefik runs as a node process, not a pod: a NetworkPolicy admitting the `ingress` namespace
has no controller pod to select (and the bridge CNI enforces no NetworkPolicy anyway).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from harness.node import NODE_IP, KubeNode
from harness.node_ingress import (
    GATEWAY,
    GATEWAY_LISTENER,
    INGRESS_CLASS,
    NAMESPACE,
    Traefik,
    create,
    echo_app,
    example_tls,
    tls_secret,
    wait_until,
)

pytestmark = pytest.mark.integration

APPS = "web"
ROUTABLE_TIMEOUT = 60.0
ROLLOUT_TIMEOUT = 120.0


def _get(node: KubeNode, path: str) -> dict[str, Any]:
    with node.api.admin_http() as http:
        response = http.get(path)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def _rolled_out(node: KubeNode, name: str) -> None:
    """The app's pod is Ready (and so in its Service's endpoints) before any route is made:
    the time measured afterwards is the controller's alone."""
    path = f"/apis/apps/v1/namespaces/{APPS}/deployments/{name}"
    wait_until(lambda: _get(node, path).get("status", {}).get("availableReplicas", 0) >= 1,
               f"Deployment {APPS}/{name} available", ROLLOUT_TIMEOUT,
               lambda: str(_get(node, path).get("status")))


def _condition(obj: dict[str, Any], kind: str) -> str | None:
    for condition in obj.get("conditions", []):
        if condition["type"] == kind:
            return str(condition["status"])
    return None


def test_an_ingress_routes_its_host_over_tls_with_its_secret(kube_node: KubeNode,
                                                             traefik: Traefik) -> None:
    pair = example_tls()
    echo_app(kube_node, APPS, "app")
    tls_secret(kube_node, APPS, "app-tls", pair)
    _rolled_out(kube_node, "app")
    host = "app.example.test"
    verify = pair.client_context()

    created = time.monotonic()
    create(kube_node, f"/apis/networking.k8s.io/v1/namespaces/{APPS}/ingresses", {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "app", "annotations": {
            # Traefik enables TLS on an Ingress's router only when told; `tls` gives the cert.
            "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
            "traefik.ingress.kubernetes.io/router.tls": "true"}},
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            "tls": [{"hosts": [host], "secretName": "app-tls"}],
            "rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]}})

    def routed() -> bool:
        # Verified against the test CA only: traefik's default (self-signed) cert fails here.
        return traefik.get(host, "/hello", https=True, verify=verify).status_code == 200

    wait_until(routed, f"https://{host}/ through traefik", ROUTABLE_TIMEOUT,
               lambda: f"traefik log:\n{traefik.log_tail(30)}")
    routable_after = time.monotonic() - created
    response = traefik.get(host, "/hello", https=True, verify=verify)
    assert response.text == f"app /hello host={host}", response.text

    # A host no rule names: traefik's own 404 (over TLS it serves its default cert for it).
    wrong = traefik.get("nothere.example.test", "/hello", https=True, verify=False)
    assert wrong.status_code == 404, wrong.text
    # The router is on websecure only: plain HTTP to the same host is not routed.
    assert traefik.get(host, "/hello").status_code == 404

    # Traefik publishes its address in the Ingress status (ingressEndpoint.ip).
    path = f"/apis/networking.k8s.io/v1/namespaces/{APPS}/ingresses/app"
    wait_until(lambda: _get(kube_node, path)["status"]["loadBalancer"]["ingress"][0]["ip"]
               == NODE_IP, "Ingress status address", 30.0,
               lambda: str(_get(kube_node, path).get("status")))
    rss = kube_node.memory().get("traefik", 0.0)
    print(f"\ntraefik {traefik.version} start-up {traefik.timings}, {rss:.0f} MiB RSS; "
          f"Ingress routable (TLS) after {routable_after:.2f} s")


def test_an_httproute_on_the_gateway_routes_its_host(kube_node: KubeNode,
                                                     traefik: Traefik) -> None:
    echo_app(kube_node, APPS, "gw-app")
    _rolled_out(kube_node, "gw-app")
    gateway_path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/gateways/{GATEWAY}"
    wait_until(lambda: _condition(_get(kube_node, gateway_path).get("status", {}),
                                  "Programmed") == "True",
               "Gateway Programmed", 30.0,
               lambda: f"{_get(kube_node, gateway_path).get('status')}; traefik log:\n"
                       f"{traefik.log_tail(30)}")
    host = "gw.example.test"

    created = time.monotonic()
    create(kube_node, f"/apis/gateway.networking.k8s.io/v1/namespaces/{APPS}/httproutes", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "gw-app"},
        "spec": {
            "parentRefs": [{"name": GATEWAY, "namespace": NAMESPACE,
                            "sectionName": GATEWAY_LISTENER}],
            "hostnames": [host],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                       "backendRefs": [{"name": "gw-app", "port": 80}]}]}})

    def routed() -> bool:
        return traefik.get(host, "/x").status_code == 200

    wait_until(routed, f"http://{host}/ through traefik", ROUTABLE_TIMEOUT,
               lambda: f"traefik log:\n{traefik.log_tail(30)}")
    routable_after = time.monotonic() - created
    response = traefik.get(host, "/x")
    assert response.text == f"gw-app /x host={host}", response.text
    assert traefik.get("nothere.example.test", "/x").status_code == 404

    route_path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{APPS}/httproutes/gw-app"
    parents = _get(kube_node, route_path)["status"]["parents"]
    assert [_condition(p, "Accepted") for p in parents] == ["True"], parents

    # Through the controller's ClusterIP Service (kube-proxy -> the node address), as a pod
    # would reach it.
    via_service = traefik.get(host, "/svc", address=traefik.service_ip)
    assert via_service.status_code == 200, via_service.text
    print(f"\nHTTPRoute routable after {routable_after:.2f} s")


def test_the_controller_answers_unknown_hosts_with_404(traefik: Traefik) -> None:
    try:
        response = traefik.get("unknown.example.test")
    except httpx.HTTPError as exc:
        raise AssertionError(f"traefik did not answer: {exc}; log:\n{traefik.log_tail()}") from exc
    assert response.status_code == 404
