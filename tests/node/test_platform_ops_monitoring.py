"""Monitoring (kubernetes.monitoring) on the real node, after test_platform_ha.py on the
session's `reference_platform`: the Prometheus Operator's CRDs installed (from its Go module,
harness/monitoring.py), `apply` with the ServiceMonitor and the alerts on creates both and a
NetworkPolicy rule for the scraper's namespace; then Prometheus's view, step by step: the
Services the ServiceMonitor selects (exactly the server's), their EndpointSlices' ready
addresses on the endpoint's port, and a pod in the metrics namespace scraping `/metrics` at each
of them as Prometheus does (Host = the address). Every metric the alerts use is in what it
gets. No Prometheus or operator runs: what they would do with the objects is done by hand. The
original config is applied again at the end, which prunes both objects."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from harness.monitoring import build_tools, install_crds
from harness.node_platform import HOSTNAME, NAMESPACE, Deployed, wait_for
from mlflow_stack.config.loader import load_config

pytestmark = pytest.mark.integration

SCRAPER_NS = "prometheus"  # the scraper's namespace (kubernetes.metrics_namespace)
MON = "/apis/monitoring.coreos.com/v1/namespaces"
# The series the alerts are written on (manifests/monitoring.py), besides Prometheus's `up`.
ALERT_METRICS = ("mlflow_http_request_total", "mlflow_http_request_duration_seconds_bucket",
                 "mlflow_db_connection_errors_total")

SCRAPER = """
import json, sys, urllib.request
found = {}
for target in sys.argv[1:]:  # host:port, as Prometheus addresses an endpoint (Host included)
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=20) as r:
        body = r.read().decode()
        names = {line.split("{")[0].split(" ")[0] for line in body.splitlines()
                 if line and not line.startswith("#")}
        found[target] = {"status": r.status, "type": r.headers.get("Content-Type", ""),
                         "metrics": sorted(n for n in names if n.startswith("mlflow_")
                                           and not n.endswith(("_created", "_sum", "_count")))}
report = json.dumps(found)
open("/dev/termination-log", "w").write(report[:4000])
print(report)
"""


def _config(platform: Deployed) -> str:
    settings = load_config(platform.config, require_secrets=False).settings
    data = settings.model_dump(mode="json", exclude={"secrets"}, exclude_defaults=True)
    k = data.setdefault("kubernetes", {})
    k["metrics_namespace"] = SCRAPER_NS
    k["monitoring"] = {
        "service_monitor": {"enabled": True, "namespace": SCRAPER_NS, "interval": "30s",
                            "labels": {"release": "kube-prometheus-stack"}},
        "alerts": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    }
    path = platform.home / "monitoring.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _status(platform: Deployed, path: str) -> int:
    with platform.node.api.admin_http() as http:
        return http.get(path).status_code


def _selected_targets(platform: Deployed, sm: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What the operator would give Prometheus for this ServiceMonitor: the Services its
    selector matches in its namespaces, and their endpoints' ready addresses on its port."""
    (endpoint,) = sm["spec"]["endpoints"]
    selector = ",".join(f"{k}={v}" for k, v in sm["spec"]["selector"]["matchLabels"].items())
    services, targets = [], []
    for ns in sm["spec"]["namespaceSelector"]["matchNames"]:
        found = platform.get(f"/api/v1/namespaces/{ns}/services?labelSelector="
                             f"{quote(selector)}")["items"]
        for service in found:
            name = service["metadata"]["name"]
            services.append(f"{ns}/{name}")
            slices = platform.get(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
                                  f"?labelSelector=kubernetes.io%2Fservice-name%3D{name}")
            for piece in slices["items"]:
                ports = [p["port"] for p in piece.get("ports") or []
                         if p.get("name") == endpoint["port"]]
                for ep in piece.get("endpoints") or []:
                    if ep.get("conditions", {}).get("ready"):
                        targets += [f"{a}:{p}" for a in ep["addresses"] for p in ports]
    return services, sorted(targets)


def _scrape(platform: Deployed, targets: list[str]) -> dict[str, Any]:
    pod = "servicemonitor-scraper"
    with platform.node.api.admin_http() as http:
        created = http.post(f"/api/v1/namespaces/{SCRAPER_NS}/pods", json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
            "spec": {"restartPolicy": "Never", "enableServiceLinks": False,
                     "automountServiceAccountToken": False,
                     "containers": [{"name": "scrape", "image": platform.node.image("server"),
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["python", "-c", SCRAPER, *targets]}]}})
        assert created.status_code == 201, created.text

    def finished() -> dict[str, Any] | None:
        p = platform.get(f"/api/v1/namespaces/{SCRAPER_NS}/pods/{pod}")
        return p if p["status"].get("phase") in ("Succeeded", "Failed") else None

    done = wait_for(finished, "the scraper pod to finish", timeout=180)
    assert done is not None
    state = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0, state
    result: dict[str, Any] = json.loads(state["message"])
    return result


def test_the_service_monitor_selects_the_server_and_its_targets_serve_metrics(
        reference_platform: Deployed) -> None:
    platform = reference_platform
    tools = build_tools()
    started = time.monotonic()
    install_crds(platform.node.api, tools)
    print(f"CRDs established in {time.monotonic() - started:.1f} s")
    with platform.node.api.admin_http() as http:
        r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": SCRAPER_NS}})
        assert r.status_code in (201, 409), r.text
    sm_path = f"{MON}/{SCRAPER_NS}/servicemonitors/mlflow"
    rule_path = f"{MON}/{NAMESPACE}/prometheusrules/mlflow"
    try:
        config = _config(platform)
        applied = platform.cli("apply", "-c", config)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        again = platform.cli("plan", "-c", config)
        assert again.returncode == 0 and "No changes" in again.stdout, \
            again.stdout + again.stderr

        sm = platform.get(sm_path)
        rule = platform.get(rule_path)
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert {r["alert"] for r in rule["spec"]["groups"][0]["rules"]} == {
            "MLflowServerDown", "MLflowHighErrorRate", "MLflowHighLatency",
            "MLflowDatabaseConnectionErrors"}
        policy = platform.get(f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/"
                              "networkpolicies/mlflow")
        admitted = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    for rule_ in policy["spec"]["ingress"] for peer in rule_["from"]]
        assert SCRAPER_NS in admitted, policy["spec"]["ingress"]

        # One request the counters count, through the Service (a pod's counter has a sample).
        service = platform.get(f"/api/v1/namespaces/{NAMESPACE}/services/mlflow")
        token = platform.token(platform.realm_admin)

        def counted() -> httpx.Response:
            with httpx.Client(trust_env=False, timeout=30) as http:
                return http.get(f"http://{service['spec']['clusterIP']}:5000/api/2.0/mlflow/"
                                "experiments/search?max_results=1",
                                headers={"Host": HOSTNAME, "Authorization": f"Bearer {token}"})
        assert platform.node.in_netns(counted).status_code == 200

        def selected() -> tuple[list[str], list[str]] | None:
            services, targets = _selected_targets(platform, sm)
            pod_ips = sorted(f"{p['status']['podIP']}:5000" for p in platform.ready_pods())
            # Every Ready server pod is a target, and nothing else is (once the endpoint
            # controller has caught up with the pods).
            return (services, targets) if targets and targets == pod_ips else None

        found = wait_for(selected, "the ServiceMonitor's targets to be the Ready server pods",
                         timeout=120)
        assert found is not None
        services, targets = found
        assert services == [f"{NAMESPACE}/mlflow"], services
        scraped = _scrape(platform, targets)
        assert sorted(scraped) == targets, scraped
        for target, got in scraped.items():
            assert got["status"] == 200 and got["type"].startswith("text/plain"), (target, got)
            # Ours, pre-set at 0 in every pod: the DB alert has a series from the start.
            assert "mlflow_db_connection_errors_total" in got["metrics"], (target, got)
        union = {m for got in scraped.values() for m in got["metrics"]}
        assert set(ALERT_METRICS) <= union, sorted(union)
    finally:
        with platform.node.api.admin_http() as http:
            http.delete(f"/api/v1/namespaces/{SCRAPER_NS}/pods/servicemonitor-scraper")
        back = platform.cli("apply", "-c", str(platform.config))
        assert back.returncode == 0, back.stdout + back.stderr
        with platform.node.api.admin_http() as http:
            http.delete(f"/api/v1/namespaces/{SCRAPER_NS}")
    # The original config has no monitoring: apply pruned both objects.
    assert _status(platform, sm_path) == 404
    assert _status(platform, rule_path) == 404
