"""kubernetes.monitoring settings: off by default, bad values refused with exit 2 at
`mlflow-stack config check`, naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_stack.config.model import Settings
from mlflow_stack.config.monitoring import duration_ms

CLI = [sys.executable, "-m", "mlflow_stack.cli.main"]
ON = "kubernetes:\n  metrics_namespace: monitoring\n  monitoring:\n"


def config_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "c.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ADMIN_PASSWORD", "MLFLOW_STACK_"))}
    env["HOME"] = str(tmp_path)
    return subprocess.run([*CLI, "config", "check", "-c", "c.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_off_by_default() -> None:
    m = Settings().kubernetes.monitoring
    assert not m.enabled and not m.service_monitor.enabled and not m.alerts.enabled


def test_durations() -> None:
    assert duration_ms("1h30m") == 5_400_000 and duration_ms("250ms") == 250
    assert duration_ms("30s") == 30_000 and duration_ms("0") == 0


@pytest.mark.parametrize(("text", "needles"), [
    (ON + "    service_monitor: {enabled: true, interval: 30}\n",
     ["kubernetes.monitoring.service_monitor.interval"]),
    (ON + "    service_monitor: {enabled: true, interval: 1m30}\n",
     ["kubernetes.monitoring.service_monitor.interval", "not a Prometheus duration"]),
    (ON + "    service_monitor: {enabled: true, interval: 10s, scrape_timeout: 15s}\n",
     ["scrape_timeout (15s) is longer than", "interval (10s)"]),
    (ON + "    service_monitor: {enabled: true, labels: {'bad key!': x}}\n",
     ["kubernetes.monitoring.service_monitor.labels", "not a valid Kubernetes label key"]),
    (ON + "    service_monitor: {enabled: true, namespace: Monitoring}\n",
     ["kubernetes.monitoring.service_monitor.namespace"]),
    (ON + "    alerts: {enabled: true, error_ratio: 5}\n",
     ["kubernetes.monitoring.alerts.error_ratio"]),
    (ON + "    alerts: {enabled: true, latency_p95_seconds: 0}\n",
     ["kubernetes.monitoring.alerts.latency_p95_seconds"]),
    (ON + "    alert: {enabled: true}\n", ["did you mean 'alerts'"]),
    (ON + "    service_monitor: {enabled: true, scrape_interval: 1m}\n",
     ["did you mean 'interval'"]),
    ("server: {prometheus: false}\nkubernetes:\n  monitoring:\n    alerts: {enabled: true}\n",
     ["server.prometheus is false"]),
    ("kubernetes:\n  monitoring:\n    service_monitor: {enabled: true}\n",
     ["kubernetes.metrics_namespace", "NetworkPolicy admits no scraper"]),
])
def test_bad_values_exit_2_naming_the_field(tmp_path: Path, text: str,
                                            needles: list[str]) -> None:
    result = config_check(tmp_path, text)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.mark.parametrize("text", [
    ON + "    service_monitor: {enabled: true, interval: 1m, scrape_timeout: 1m, "
    "labels: {release: kube-prometheus-stack}}\n    alerts: {enabled: true}\n",
    # No NetworkPolicy: nothing to let the scraper through.
    "kubernetes:\n  network_policy: false\n  monitoring:\n    service_monitor: {enabled: true}\n",
])
def test_good_values_pass(tmp_path: Path, text: str) -> None:
    result = config_check(tmp_path, text)
    assert result.returncode == 0, result.stdout + result.stderr
