"""The server image on a real node: built from image/ (the recipe users build), deployed by the
project's own apply path, Ready through the kubelet's startup/readiness/liveness probes on
/health, and answering through its Service.

The config is the smallest the Kubernetes target accepts: SQLite metadata and local artifacts on
the `mlflow-storage` PVC (bound to a hostPath PV the harness provides), no SSO, no discovery.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import psutil
import pytest

from harness.kube import settings_with
from harness.node import KubeNode
from harness.procs import log_tail
from mlflow_stack.components.kubernetes import apply_objects
from mlflow_stack.manifests import labels as lb
from mlflow_stack.manifests.workload import RUN_AS_UID

pytestmark = pytest.mark.integration

NAMESPACE = "mlflow-sqlite"  # the reference platform (test_platform.py) gets "mlflow"
STORAGE_CLASS = "node-hostpath"


def _settings(node: KubeNode) -> Any:
    repository, tag = node.image("server").rsplit(":", 1)
    project, image = repository.rsplit("/", 1)
    return settings_with({
        "database": {"backend": "sqlite"},
        "artifacts": {"backend": "local"},
        "auth": {"provider": "none"},
        # No registry host: no pull secret; the image is already in the node's containerd.
        "registry": {"project": project, "image": image, "tag": tag},
        "storage": {"storage_class": STORAGE_CLASS, "capacity": "1Gi",
                    "models": {"enabled": False}},
        "kubernetes": {"kubeconfig": str(node.admin_kubeconfig), "namespace": NAMESPACE},
        "discovery": {"enabled": False},
    })


def _get(node: KubeNode, path: str) -> dict[str, Any]:
    with node.api.admin_http() as http:
        response = http.get(path)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def test_server_image_becomes_ready_through_its_probes(kube_node: KubeNode) -> None:
    settings = _settings(kube_node)
    kube_node.hostpath_volume("mlflow-storage-pv", STORAGE_CLASS, "1Gi")

    started = time.monotonic()
    report = apply_objects(settings)  # waits for the rollout: Available through the probes
    ready_after = time.monotonic() - started
    assert report.writes > 0

    pods = _get(kube_node, f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3D{lb.APP}")
    assert len(pods["items"]) == 1, pods["items"]
    pod = pods["items"][0]
    container = pod["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["Ready"] == "True" and conditions["ContainersReady"] == "True", conditions
    status = pod["status"]["containerStatuses"][0]
    assert status["started"] and status["ready"], status
    assert status["restartCount"] == 0, status  # the liveness probe never failed
    assert status["image"].endswith(kube_node.image("server").split("/", 1)[1])

    # The server runs as the image's non-root user.
    server_uids = {p.uids().real for p in psutil.process_iter(["cmdline"])
                   if "mlflow" in " ".join(p.info["cmdline"] or [])
                   and _in_node_cgroups(kube_node, p.pid)}
    assert server_uids == {RUN_AS_UID}, server_uids

    # /health through the Service (kube-proxy's rules), from inside the node's network.
    service = _get(kube_node, f"/api/v1/namespaces/{NAMESPACE}/services/{lb.APP}")
    cluster_ip = service["spec"]["clusterIP"]
    port = service["spec"]["ports"][0]["port"]
    health = _get_through_service(kube_node, f"http://{cluster_ip}:{port}/health")
    assert health.strip() == "OK", health

    # A second apply of the same config writes nothing.
    assert apply_objects(settings).writes == 0

    memory = kube_node.memory()
    print(f"\nnode timings {kube_node.timings}; server Deployment Ready after {ready_after:.1f} s; "
          "memory (MiB RSS) " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))


MONITORING = "monitoring"
# What Prometheus does, from a pod in the monitoring namespace: GET the pod IP's /metrics (the
# Host header is the pod IP), and one target that must stay closed to that Host.
SCRAPER = """
import sys, urllib.error, urllib.request
def get(url, host=None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
base = sys.argv[1]
# One request MLflow counts (an allowed Host), so the request counter has a sample.
counted, _ = get(base + "/api/2.0/mlflow/experiments/search?max_results=1", "localhost:5000")
status, body = get(base + "/metrics")
closed, _ = get(base + "/metrics/x")
has_help, counter = "# HELP " in body, "mlflow_http_request_total" in body
report = f"counted {counted} metrics {status} help {has_help} counter {counter} other {closed}"
open("/dev/termination-log", "w").write(report)
print(report)
"""


def test_a_monitoring_pod_scrapes_metrics_by_pod_ip(kube_node: KubeNode) -> None:
    """Prometheus's view: a pod in the namespace the config names scrapes the MLflow pod at its
    IP. The NetworkPolicy carries the rule for that namespace; the node's bridge CNI does not
    enforce NetworkPolicy, so a pod elsewhere would get in too: that is not shown here."""
    settings = _settings(kube_node)
    settings.kubernetes.metrics_namespace = MONITORING
    with kube_node.api.admin_http() as http:  # made by the test above, when it ran first
        if http.get("/api/v1/persistentvolumes/mlflow-storage-pv").status_code == 404:
            kube_node.hostpath_volume("mlflow-storage-pv", STORAGE_CLASS, "1Gi")
    apply_objects(settings)
    policy = _get(kube_node, f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/"
                             f"networkpolicies/{lb.NETWORK_POLICY}")
    sources = [r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for r in policy["spec"]["ingress"]]
    assert sources == ["ingress", MONITORING], policy["spec"]["ingress"]

    pods = _get(kube_node, f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3D{lb.APP}")
    ready = [p for p in pods["items"] if p["status"].get("podIP")
             and {c["type"]: c["status"] for c in p["status"].get("conditions", [])
                  }.get("Ready") == "True"]
    assert ready, pods["items"]
    target = f"http://{ready[0]['status']['podIP']}:{settings.server.port}"

    with kube_node.api.admin_http() as http:
        namespace = http.post("/api/v1/namespaces", json={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MONITORING}})
        assert namespace.status_code in (201, 409), namespace.text
        created = http.post(f"/api/v1/namespaces/{MONITORING}/pods", json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "scraper"},
            "spec": {"restartPolicy": "Never", "enableServiceLinks": False,
                     "automountServiceAccountToken": False,
                     "containers": [{
                         "name": "scrape", "image": kube_node.image("server"),
                         "imagePullPolicy": "IfNotPresent",
                         "command": ["python", "-c", SCRAPER, target],
                     }]}})
        assert created.status_code == 201, created.text

    def finished() -> dict[str, Any] | None:
        pod = _get(kube_node, f"/api/v1/namespaces/{MONITORING}/pods/scraper")
        done = pod["status"].get("phase") in ("Succeeded", "Failed")
        return pod if done else None

    deadline = time.monotonic() + 120
    pod = finished()
    while pod is None and time.monotonic() < deadline:
        time.sleep(1)
        pod = finished()
    assert pod is not None, "the scraper pod did not finish within 120 s"
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0, state
    assert state.get("message") == \
        "counted 200 metrics 200 help True counter True other 403", state


def _get_through_service(node: KubeNode, url: str, timeout: float = 30.0) -> str:
    """The body of a 200 answer at url (a Service address): kube-proxy programs the Service's
    endpoints a moment after the pod turns Ready, so allow it that moment."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = node.http_get(url, timeout=5.0)
            if response.status_code == 200:
                return response.text
            last = f"HTTP {response.status_code}: {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    slices = _get(node, f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices")
    raise AssertionError(f"{url} did not answer 200 within {timeout:.0f} s ({last}); "
                         f"EndpointSlices: {slices['items']}; kube-proxy log:\n"
                         f"{log_tail(node.logs()['kube-proxy'], 20)}")


def _in_node_cgroups(node: KubeNode, pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            return f"/{node.name}/" in handle.read()
    except OSError:
        return False
