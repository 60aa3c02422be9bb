"""The Prometheus Operator objects (issue 17 §2): a ServiceMonitor for the server's ``/metrics``
and a PrometheusRule with its alerts.

Every expression is written on what the server's ``/metrics`` really exports (MLflow 3.17.2's
``prometheus_flask_exporter``, prefix ``mlflow``, multiprocess mode; README "Monitoring"):

- ``mlflow_http_request_total{method, status}``: requests Flask answered (``status`` is the
  numeric code, e.g. ``"503"``);
- ``mlflow_http_request_duration_seconds_bucket{method, mlflow_version, status, le}``:
  prometheus_client's default buckets (5 ms .. 10 s);
- ``mlflow_db_connection_errors_total{stage}``: ours (server/db_metrics.py), connection
  failures (``connect``) and lost connections (``disconnect``) of every SQLAlchemy engine;
- ``up``: Prometheus's own, per target; with the ServiceMonitor, ``job`` is the Service's name
  and ``namespace`` the Service's namespace.
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.config.model import Settings
from mlflow_stack.manifests import labels as lb

API_VERSION = "monitoring.coreos.com/v1"
NAME = "mlflow"
# How long a condition must hold before the alert fires: a restart or one slow minute is not a
# page.
DOWN_FOR = "5m"
ERRORS_FOR = "10m"
LATENCY_FOR = "15m"
DB_ERRORS_FOR = "0m"  # every lost or refused connection already failed requests


def objects(settings: Settings) -> list[dict[str, Any]]:
    """The monitoring objects these settings turn on (none by default)."""
    m = settings.kubernetes.monitoring
    out: list[dict[str, Any]] = []
    if m.service_monitor.enabled:
        out.append(service_monitor(settings))
    if m.alerts.enabled:
        out.append(prometheus_rule(settings))
    return out


def service_selector(settings: Settings) -> dict[str, str]:
    """Labels only the server's Service has (manifests/network.py `service`)."""
    labels = lb.standard_labels(settings, "server")
    return {key: labels[key] for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                                          "app.kubernetes.io/component")}


def service_monitor(settings: Settings) -> dict[str, Any]:
    k = settings.kubernetes
    sm = k.monitoring.service_monitor
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": lb.metadata(settings, NAME, "monitoring", namespace=sm.namespace,
                                labels=dict(sm.labels)),
        "spec": {
            "selector": {"matchLabels": service_selector(settings)},
            # Named even when it is the ServiceMonitor's own: it may live elsewhere.
            "namespaceSelector": {"matchNames": [k.namespace]},
            "endpoints": [{
                "port": lb.PORT_NAME,
                "path": "/metrics",  # exactly: the only target a pod-IP Host may reach
                "scheme": "http",
                "interval": sm.interval,
                "scrapeTimeout": sm.scrape_timeout,
            }],
        },
    }


def alert_rules(settings: Settings) -> list[dict[str, Any]]:
    """The alerting rules (also what tests parse with Prometheus's own PromQL parser)."""
    k = settings.kubernetes
    a = k.monitoring.alerts
    sel = f'job="{a.job}", namespace="{k.namespace}"'
    where = f"MLflow in namespace {k.namespace}"
    requests = f"sum(rate(mlflow_http_request_total{{{sel}}}[5m]))"
    return [
        {
            "alert": "MLflowServerDown",
            # absent(): also fires when there is no target at all (no pod, Service gone, the
            # ServiceMonitor not picked up), not only when targets fail their scrapes.
            "expr": f"absent(up{{{sel}}} == 1)",
            "for": DOWN_FOR,
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"{where}: no server pod answers /metrics",
                "description": f"No target of job {a.job} has been up for {DOWN_FOR}: the "
                               "tracking server is down or Prometheus cannot reach it.",
            },
        },
        {
            "alert": "MLflowHighErrorRate",
            "expr": (f'sum(rate(mlflow_http_request_total{{{sel}, status=~"5.."}}[5m])) '
                     f"/ {requests} > {a.error_ratio:g}"),
            "for": ERRORS_FOR,
            "labels": {"severity": a.severity},
            "annotations": {
                "summary": f"{where}: more than {a.error_ratio:.0%} of requests fail with 5xx",
                "description": "{{ $value | humanizePercentage }} of requests answered 5xx "
                               "over 5 minutes.",
            },
        },
        {
            "alert": "MLflowHighLatency",
            "expr": (f"histogram_quantile(0.95, sum by (le) (rate("
                     f"mlflow_http_request_duration_seconds_bucket{{{sel}}}[5m]))) "
                     f"> {a.latency_p95_seconds:g}"),
            "for": LATENCY_FOR,
            "labels": {"severity": a.severity},
            "annotations": {
                "summary": f"{where}: 95th percentile request time above "
                           f"{a.latency_p95_seconds:g} s",
                "description": "p95 over 5 minutes is {{ $value | humanizeDuration }}.",
            },
        },
        {
            "alert": "MLflowDatabaseConnectionErrors",
            "expr": f"sum(increase(mlflow_db_connection_errors_total{{{sel}}}[5m])) > 0",
            "for": DB_ERRORS_FOR,
            "labels": {"severity": a.severity},
            "annotations": {
                "summary": f"{where}: connections to the database fail or are lost",
                "description": "{{ $value | humanize }} database connection errors in 5 "
                               "minutes (refused or failed connects, connections lost).",
            },
        },
    ]


def prometheus_rule(settings: Settings) -> dict[str, Any]:
    a = settings.kubernetes.monitoring.alerts
    return {
        "apiVersion": API_VERSION,
        "kind": "PrometheusRule",
        "metadata": lb.metadata(settings, NAME, "monitoring", namespace=a.namespace,
                                labels=dict(a.labels)),
        "spec": {"groups": [{"name": "mlflow", "rules": alert_rules(settings)}]},
    }
