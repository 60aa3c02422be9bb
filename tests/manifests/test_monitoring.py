"""The ServiceMonitor and PrometheusRule (manifests/monitoring.py): off by default, rendered
from the settings, and every alert on a metric the server really exports."""

from __future__ import annotations

import re
from typing import Any

from harness.kube import find, kinds, settings_with
from mlflow_stack.config.model import Settings
from mlflow_stack.manifests import monitoring, network
from mlflow_stack.manifests.render import render

ON: dict[str, Any] = {"kubernetes": {
    "namespace": "ml", "metrics_namespace": "monitoring",
    "monitoring": {"service_monitor": {"enabled": True, "namespace": "monitoring",
                                       "interval": "15s", "scrape_timeout": "5s",
                                       "labels": {"release": "kube-prometheus-stack"}},
                   "alerts": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                              "error_ratio": 0.1, "latency_p95_seconds": 3}}}}

# What the server's /metrics exports (README "Monitoring"; tests/server/test_metrics_live.py
# and test_db_metrics.py scrape them), with their labels.
EXPORTED = {
    "up": {"job", "namespace"},
    "mlflow_http_request_total": {"method", "status"},
    "mlflow_http_request_duration_seconds_bucket": {"method", "mlflow_version", "status", "le"},
    "mlflow_db_connection_errors_total": {"stage"},
}
# Labels the ServiceMonitor's targets carry besides the metric's own.
TARGET_LABELS = {"job", "namespace", "service", "pod", "container", "endpoint", "instance"}


def test_off_by_default(reference: Settings) -> None:
    found = kinds(render(reference).objects)
    assert "ServiceMonitor" not in found and "PrometheusRule" not in found


def test_service_monitor_selects_the_server_service() -> None:
    settings = settings_with(ON)
    objects = render(settings).objects
    sm = find(objects, "ServiceMonitor", "mlflow", "monitoring")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = find(objects, "Service", "mlflow", "ml")
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint == {"port": "http", "path": "/metrics", "scheme": "http",
                        "interval": "15s", "scrapeTimeout": "5s"}
    # The selector matches only the server's Service: nothing else rendered has those labels.
    others = [o for o in objects if o["kind"] == "Service" and o is not service
              and selector.items() <= o["metadata"].get("labels", {}).items()]
    assert others == []


def test_the_network_policy_admits_the_scraper() -> None:
    policy = network.network_policy(settings_with(ON))
    allowed = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert "monitoring" in allowed


def test_rule_objects_and_thresholds() -> None:
    settings = settings_with(ON)
    rule = find(render(settings).objects, "PrometheusRule", "mlflow", "ml")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {"MLflowServerDown", "MLflowHighErrorRate", "MLflowHighLatency",
                           "MLflowDatabaseConnectionErrors"}
    assert alerts["MLflowServerDown"]["labels"]["severity"] == "critical"
    assert alerts["MLflowHighErrorRate"]["expr"].endswith("> 0.1")
    assert alerts["MLflowHighLatency"]["expr"].endswith("> 3")
    for r in alerts.values():
        assert 'namespace="ml"' in r["expr"] and 'job="mlflow"' in r["expr"]
        assert r["annotations"]["summary"] and r["for"]


def test_every_alert_uses_exported_metrics_and_labels() -> None:
    for r in monitoring.alert_rules(settings_with(ON)):
        selectors = re.findall(r"([a-z_]+)\{([^}]*)\}", r["expr"])
        assert selectors, r["expr"]
        for metric, matchers in selectors:
            assert metric in EXPORTED, (r["alert"], metric)
            labels = set(re.findall(r"([a-z_]+)\s*=~?", matchers))
            assert labels <= EXPORTED[metric] | TARGET_LABELS, (r["alert"], labels)
        for by in re.findall(r"by \(([^)]*)\)", r["expr"]):
            assert {x.strip() for x in by.split(",")} <= {"le"}, r["expr"]


def test_the_job_label_follows_the_setting() -> None:
    data = {"kubernetes": {"monitoring": {"alerts": {"enabled": True, "job": "kubernetes-pods"}}}}
    for r in monitoring.alert_rules(settings_with(data)):
        assert 'job="kubernetes-pods", namespace="mlflow"' in r["expr"]
