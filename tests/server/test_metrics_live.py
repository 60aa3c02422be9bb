"""Prometheus scrapes ``/metrics`` by pod IP on real servers (server/patches/metrics_scrape.py):
the no-auth platform (MLflow's app through ours) and the SSO app against a real Keycloak.

A scrape comes with the pod's IP as Host, which no allow-list names: exactly ``GET``/``HEAD
/metrics`` answers 200 with Prometheus text and needs no login; every other request target
with that Host, however spelled, still gets MLflow's 403.
"""

from __future__ import annotations

import http.client
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.sso import ADMIN_ROLE, provision_realm, running, sso_settings
from mlflow_stack.config.model import Settings

pytestmark = pytest.mark.integration
POD_IP = "10.244.0.7"
INVALID_HOST = b"Invalid Host header"

# Request targets that are not exactly /metrics: with a wrong Host, each must get 403.
WRONG_TARGETS = [
    "/metrics/", "/metrics/x", "/metrics?x", "/metrics?name[]=mlflow_http_request_total",
    "//metrics", "///metrics", "/%6detrics", "/%6Detrics", "/metric%73", "/%2fmetrics",
    "/metrics%2f", "/metrics%3fx", "/./metrics", "/x/../metrics", "/METRICS", "/metrics;x",
    "/metricsx", "/health/../metrics", "/", "/api/2.0/mlflow/experiments/search?max_results=1",
    "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "/version/../metrics",
]


@dataclass
class Live:
    port: int
    token: str | None  # a bearer token for a request that counts (SSO)


def send(port: int, method: str, target: str, host: str | None,
         token: str | None = None) -> tuple[int, str, bytes]:
    """One request with exactly this target and Host, on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        if token is not None:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    port = free_port()
    settings = Settings.model_validate({"server": {"port": port}})
    with running(settings, tmp_path_factory.mktemp("metrics-plain")):
        yield Live(port, None)


@pytest.fixture(scope="module")
def sso(keycloak: KeycloakServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    port = free_port()
    realm = provision_realm(keycloak, f"metrics-{uuid.uuid4().hex[:8]}",
                            f"http://127.0.0.1:{port}", users={"alice": [ADMIN_ROLE]})
    with running(sso_settings(realm, port), Path(tmp_path_factory.mktemp("metrics-sso"))):
        yield Live(port, realm.token("alice"))


@pytest.fixture(params=["plain", "sso"])
def live(request: pytest.FixtureRequest) -> Live:
    value: Live = request.getfixturevalue(request.param)
    return value


@pytest.fixture
def port(live: Live) -> int:
    return live.port


def test_a_scrape_by_pod_ip_gets_prometheus_text_without_a_login(live: Live) -> None:
    port = live.port
    counted = send(port, "GET", "/api/2.0/mlflow/experiments/search?max_results=1",
                   f"127.0.0.1:{port}", live.token)  # a request for the counter to count
    assert counted[0] == 200, counted
    status, content_type, body = send(port, "GET", "/metrics", f"{POD_IP}:{port}")
    assert status == 200, body[:300]
    assert content_type.startswith("text/plain"), content_type
    text = body.decode()
    assert "# HELP " in text and "# TYPE " in text
    # prometheus_flask_exporter's request counter, under MLflow's prefix
    assert "# TYPE mlflow_http_request_total counter" in text
    assert "mlflow_http_request_total{" in text
    # Ours (server/db_metrics.py), installed by both apps, at 0 from the start.
    assert "# TYPE mlflow_db_connection_errors_total counter" in text
    for stage in ("connect", "disconnect"):
        assert f'mlflow_db_connection_errors_total{{stage="{stage}"}} 0.0' in text, text
    head = send(port, "HEAD", "/metrics", f"{POD_IP}:{port}")
    assert head[0] == 200 and head[2] == b""
    # Also with no port in the Host, and with no Host at all (HTTP/1.1 needs one: 400 from
    # uvicorn itself; StrictHost's well-formedness check still applies to a scrape).
    assert send(port, "GET", "/metrics", POD_IP)[0] == 200
    assert send(port, "GET", "/metrics", f"{POD_IP}:{port}@evil.example")[0] == 400


@pytest.mark.parametrize("target", WRONG_TARGETS)
def test_no_other_target_passes_with_a_wrong_host(port: int, target: str) -> None:
    for host in (f"{POD_IP}:{port}", "evil.example"):
        status, _, body = send(port, "GET", target, host)
        assert status == 403 and INVALID_HOST in body, (target, host, status, body[:200])


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_no_other_method_on_metrics_passes_with_a_wrong_host(port: int, method: str) -> None:
    status, _, body = send(port, method, "/metrics", f"{POD_IP}:{port}")
    assert status == 403 and INVALID_HOST in body, (method, status, body[:200])


def test_an_absolute_form_target_is_not_a_scrape(port: int) -> None:
    status, _, body = send(port, "GET", f"http://{POD_IP}:{port}/metrics", f"{POD_IP}:{port}")
    assert status != 200, body[:200]
