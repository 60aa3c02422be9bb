"""Monitoring with the Prometheus Operator (issue 17 §2): a ServiceMonitor for the server's
``/metrics`` and a PrometheusRule with a few alerts. Both off by default."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from mlflow_stack.config.section import Section
from mlflow_stack.config.types import LabelKey, LabelValue, NamespaceName

# The Prometheus Operator CRDs' Duration pattern (monitoring.coreos.com/v1), so a value that
# passes here is one the API server accepts.
_DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$")
_UNIT_MS = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000,
            "m": 60_000, "s": 1000, "ms": 1}


def check_duration(value: str) -> str:
    if not value or not _DURATION.match(value):
        raise ValueError(f"{value!r} is not a Prometheus duration: expected e.g. 30s, 1m, "
                         "1h30m (units y w d h m s ms, largest first)")
    return value


def duration_ms(value: str) -> int:
    return sum(int(n) * _UNIT_MS[u] for n, u in re.findall(r"([0-9]+)(ms|[ywdhms])", value))


Duration = Annotated[str, AfterValidator(check_duration)]


class ServiceMonitorSettings(Section):
    """A ``ServiceMonitor`` selecting the server's Service: the cluster's Prometheus scrapes
    every server pod's ``/metrics`` through its endpoints."""

    enabled: bool = False
    namespace: NamespaceName | None = Field(
        None, description="Namespace of the ServiceMonitor (default: the MLflow namespace); "
        "some Prometheus installations only watch their own.")
    interval: Duration = Field("30s", description="How often each pod is scraped.")
    scrape_timeout: Duration = Field("10s", description="Timeout of one scrape (<= interval).")
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Labels the cluster's Prometheus selects "
        "ServiceMonitors by (e.g. release: kube-prometheus-stack).")

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> ServiceMonitorSettings:
        if duration_ms(self.scrape_timeout) > duration_ms(self.interval):
            raise ValueError(
                f"service_monitor.scrape_timeout ({self.scrape_timeout}) is longer than "
                f"service_monitor.interval ({self.interval}): Prometheus refuses that; "
                "expected scrape_timeout <= interval")
        return self


class AlertSettings(Section):
    """A ``PrometheusRule`` with the server's alerts (README "Monitoring" says what each means
    and what to do)."""

    enabled: bool = False
    namespace: NamespaceName | None = Field(
        None, description="Namespace of the PrometheusRule (default: the MLflow namespace).")
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Labels the cluster's Prometheus selects rules by "
        "(e.g. release: kube-prometheus-stack).")
    job: LabelValue = Field(
        "mlflow", description="The `job` label of the server's targets: the Service name "
        "(mlflow) when the ServiceMonitor scrapes them; set it when your own scrape config "
        "does.")
    error_ratio: float = Field(
        0.05, gt=0, lt=1, description="MLflowHighErrorRate: share of requests answered 5xx "
        "over 5 minutes above which it fires.")
    latency_p95_seconds: float = Field(
        2.5, gt=0, le=600, description="MLflowHighLatency: 95th percentile request duration "
        "over 5 minutes above which it fires.")
    severity: LabelValue = Field("warning", description="`severity` label of the alerts but "
                                 "MLflowServerDown, which is always critical.")


class MonitoringSettings(Section):
    service_monitor: ServiceMonitorSettings = Field(default_factory=ServiceMonitorSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    @property
    def enabled(self) -> bool:
        return self.service_monitor.enabled or self.alerts.enabled


def check_monitoring(monitoring: MonitoringSettings, *, prometheus: bool,
                     network_policy: bool, metrics_namespace: str | None) -> None:
    """Cross-section checks (raised as ValueError: exit 2 at `config check`)."""
    if monitoring.enabled and not prometheus:
        raise ValueError(
            "kubernetes.monitoring is on, but server.prometheus is false (nothing serves "
            "/metrics to scrape or alert on): turn server.prometheus on or monitoring off")
    if monitoring.service_monitor.enabled and network_policy and not metrics_namespace:
        # Without it the NetworkPolicy admits no scraper: every target would be down.
        raise ValueError(
            "kubernetes.monitoring.service_monitor is on, but the NetworkPolicy admits no "
            "scraper: set kubernetes.metrics_namespace to the namespace Prometheus runs in "
            "(or kubernetes.network_policy: false)")
