"""Service, Ingress / HTTPRoute and NetworkPolicy."""

from __future__ import annotations

import pytest

from harness.kube import find, kinds, settings_with, validate_strict
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.manifests.render import render


def test_service_keeps_the_reference_names(reference: Settings) -> None:
    svc = find(render(reference).objects, "Service", "mlflow")
    assert svc["metadata"]["namespace"] == "mlflow"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"app": "mlflow"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 5000, "targetPort": "http",
                                     "protocol": "TCP"}]


def test_ingress_reference(reference: Settings) -> None:
    ing = find(render(reference).objects, "Ingress", "mlflow")
    ann = ing["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert ann["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert ann["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert ann["traefik.ingress.kubernetes.io/router.tls"] == "true"  # Traefik serves `tls`
    spec = ing["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["mlflow.example.com"], "secretName": "mlflow-tls-secret"}]
    rule = spec["rules"][0]
    assert rule["host"] == "mlflow.example.com"
    assert rule["http"]["paths"][0]["backend"] == {
        "service": {"name": "mlflow", "port": {"name": "http"}}}


def test_ingress_configured_values() -> None:
    s = settings_with({"domain": "corp.example", "server": {"hostname": "experiments.corp.example"},
                       "kubernetes": {"ingress_class": "public", "tls_secret": "exp-tls",
                                      "proxy_timeout": 7200}})
    ing = find(render(s).objects, "Ingress")
    assert ing["spec"]["ingressClassName"] == "public"
    assert ing["spec"]["tls"] == [{"hosts": ["experiments.corp.example"],
                                   "secretName": "exp-tls"}]
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] \
        == "7200"


def test_plain_http_has_no_tls() -> None:
    s = settings_with({"server": {"hostname": "mlflow.lan", "public_scheme": "http"}})
    rendered = render(s)
    ingress = find(rendered.objects, "Ingress")
    assert "tls" not in ingress["spec"]
    assert "traefik.ingress.kubernetes.io/router.tls" not in ingress["metadata"]["annotations"]
    assert "mlflow-tls-secret" not in [n.name for n in rendered.secrets_needed]


def test_no_host_no_ingress() -> None:
    rendered = render(Settings())
    assert "Ingress" not in kinds(rendered.objects)
    assert any("Ingress" in n for n in rendered.notes)


def test_httproute_instead_of_ingress() -> None:
    s = settings_with({"domain": "example.com", "kubernetes": {
        "route": "httproute", "gateway_name": "public-gw", "gateway_namespace": "gateways",
        "proxy_timeout": 1800}})
    rendered = render(s)
    assert "Ingress" not in kinds(rendered.objects)
    route = find(rendered.objects, "HTTPRoute", "mlflow")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                   "name": "public-gw", "namespace": "gateways"}]
    assert spec["hostnames"] == ["mlflow.example.com"]
    assert spec["rules"][0]["backendRefs"] == [{"name": "mlflow", "port": 5000}]
    assert spec["rules"][0]["timeouts"] == {"request": "1800s"}
    # TLS terminates at the Gateway: no TLS Secret in MLflow's namespace.
    assert "mlflow-tls-secret" not in [n.name for n in rendered.secrets_needed]
    policy = find(rendered.objects, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}}]


def test_httproute_needs_a_gateway() -> None:
    s = settings_with({"domain": "example.com", "kubernetes": {"route": "httproute"}})
    with pytest.raises(ConfigError, match="gateway_name"):
        render(s)


def test_network_policy_reference(reference: Settings) -> None:
    policy = find(render(reference).objects, "NetworkPolicy", "mlflow")
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app": "mlflow"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress"}}}],
        "ports": [{"protocol": "TCP", "port": 5000}],
    }]
    egress = spec["egress"]
    assert egress[0] == {"ports": [{"protocol": "UDP", "port": 53},
                                   {"protocol": "TCP", "port": 53}]}
    assert egress[1] == {"ports": [{"protocol": "TCP", "port": 5432}], "to": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "postgres"}}}]}
    # S3 and Keycloak by their public names: both on 443.
    assert egress[2] == {"ports": [{"protocol": "TCP", "port": 443}]}


def test_network_policy_configured_ports_and_namespaces() -> None:
    s = settings_with({
        "database": {"backend": "postgresql", "host": "db.example.com", "port": 6543},
        "artifacts": {"backend": "s3", "endpoint_url": "http://s3.internal:8333"},
        "auth": {"provider": "keycloak", "keycloak_url": "https://sso.example.com:8443"},
        "kubernetes": {"ingress_namespace": "ingress-nginx"},
    })
    spec = find(render(s).objects, "NetworkPolicy")["spec"]
    assert spec["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"}
    assert spec["egress"][1] == {"ports": [{"protocol": "TCP", "port": 6543}]}
    assert spec["egress"][2] == {"ports": [{"protocol": "TCP", "port": 8333},
                                           {"protocol": "TCP", "port": 8443}]}


def test_network_policy_can_be_turned_off(reference: Settings) -> None:
    reference.kubernetes.network_policy = False
    assert "NetworkPolicy" not in kinds(render(reference).objects)


def test_network_policy_admits_the_monitoring_namespace_on_the_server_port(
        reference: Settings) -> None:
    before = render(reference).objects
    reference.kubernetes.metrics_namespace = "monitoring"
    after = render(reference).objects
    policy = find(after, "NetworkPolicy", "mlflow")
    assert policy["spec"]["ingress"] == [
        {"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress"}}}],
         "ports": [{"protocol": "TCP", "port": 5000}]},
        {"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}],
         "ports": [{"protocol": "TCP", "port": 5000}]},
    ]
    for version in ("1.31", "1.34"):
        validate_strict(policy, version)
    # Nothing else changes: every other object, and the rest of the policy, as before.
    old_policy = find(before, "NetworkPolicy", "mlflow")
    assert {k: v for k, v in policy["spec"].items() if k != "ingress"} == \
        {k: v for k, v in old_policy["spec"].items() if k != "ingress"}
    assert policy["spec"]["ingress"][0] == old_policy["spec"]["ingress"][0]
    assert [o for o in after if o["kind"] != "NetworkPolicy"] == \
        [o for o in before if o["kind"] != "NetworkPolicy"]


def test_the_monitoring_rule_follows_the_server_port_and_the_route() -> None:
    s = settings_with({"domain": "example.com", "server": {"port": 8080}, "kubernetes": {
        "route": "httproute", "gateway_name": "gw", "metrics_namespace": "observability"}})
    ingress = find(render(s).objects, "NetworkPolicy")["spec"]["ingress"]
    assert [r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for r in ingress] == ["mlflow", "observability"]
    assert all(r["ports"] == [{"protocol": "TCP", "port": 8080}] for r in ingress)


def test_no_monitoring_rule_by_default(reference: Settings) -> None:
    assert reference.kubernetes.metrics_namespace is None
    assert len(find(render(reference).objects, "NetworkPolicy")["spec"]["ingress"]) == 1
