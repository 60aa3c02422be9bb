"""The platform fitted into a cluster that has rules of its own, on the real node (after
test_platform_ha.py, on the session's `reference_platform`): a tainted, labelled node, a
PriorityClass, the cluster's CA bundle in a ConfigMap, Pod Security `restricted` enforced, and
an autoscaler that owns the replica count. Everything is put back at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness.node_platform import NAMESPACE, Deployed, wait_for
from mlflow_stack.config.loader import load_config

pytestmark = pytest.mark.integration

TAINT = {"key": "example.test/dedicated", "value": "ml", "effect": "NoSchedule"}
POOL_LABEL = "example.test/pool"
PRIORITY_CLASS = "mlflow-test-high"
CA_CONFIGMAP = "corp-ca"
CA_PATH = "/etc/mlflow-stack/ca/ca.crt"


def _request(platform: Deployed, method: str, path: str, body: Any = None,
             content_type: str = "application/json") -> httpx.Response:
    with platform.node.api.admin_http() as http:
        return http.request(method, path, json=body, headers={"Content-Type": content_type})


def _node_name(platform: Deployed) -> str:
    return str(platform.get("/api/v1/nodes")["items"][0]["metadata"]["name"])


def _set_node(platform: Deployed, taints: list[dict[str, str]] | None,
              label: str | None) -> None:
    response = _request(platform, "PATCH", f"/api/v1/nodes/{_node_name(platform)}",
                        {"spec": {"taints": taints},
                         "metadata": {"labels": {POOL_LABEL: label}}},
                        "application/merge-patch+json")
    assert response.status_code == 200, response.text


@contextlib.contextmanager
def _cluster_rules(platform: Deployed) -> Iterator[None]:
    """What the cluster's admin set up: the node tainted and labelled for ML work, a
    PriorityClass, and the company CA in a ConfigMap (what trust-manager would publish)."""
    created: list[tuple[str, dict[str, Any]]] = [
        ("/apis/scheduling.k8s.io/v1/priorityclasses",
         {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
          "metadata": {"name": PRIORITY_CLASS}, "value": 100000}),
        (f"/api/v1/namespaces/{NAMESPACE}/configmaps",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CA_CONFIGMAP},
          "data": {"bundle.pem": (platform.home / "ca.pem").read_text()}}),
    ]
    for path, body in created:
        response = _request(platform, "POST", path, body)
        assert response.status_code == 201, response.text
    _set_node(platform, [TAINT], "ml")
    try:
        yield
    finally:
        _set_node(platform, None, None)
        for path, body in created:
            _request(platform, "DELETE", f"{path}/{body['metadata']['name']}")


def _fitted_config(platform: Deployed) -> Path:
    # The config applied last (an inventory, or a native config an earlier test wrote).
    current = load_config(platform.config, require_secrets=False).settings.model_dump(
        mode="json", exclude={"secrets"}, exclude_defaults=True)
    fitted = platform.home / "fitted.yaml"
    fitted.write_text(yaml.safe_dump({**current, "kubernetes": {
        **current.get("kubernetes", {}),
        "autoscaling": {"enabled": True, "min_replicas": 2, "max_replicas": 3},
        "pod": {"node_selector": {POOL_LABEL: "ml"},
                "tolerations": [{**TAINT, "operator": "Equal"}],
                "priority_class": PRIORITY_CLASS,
                "annotations": {"example.test/owner": "ml-platform"},
                "extra_env": [{"name": "EXAMPLE_TEAM", "value": "ml"}],
                "extra_volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}}],
                "extra_volume_mounts": [{"name": "scratch", "mountPath": "/scratch"}]},
        "service": {"annotations": {"example.test/scrape": "true"}},
        "ca_bundle": {"configmap": CA_CONFIGMAP, "key": "bundle.pem"}}}))
    return fitted


def _server_pid(platform: Deployed, pod: dict[str, Any]) -> int:
    """The pod's server process on this host (its gunicorn master: the lowest pid among the
    processes whose command line names mlflow)."""
    uid = pod["metadata"]["uid"]
    pids = [int(pid) for directory in Path("/sys/fs/cgroup/memory", platform.node.name)
            .rglob(f"pod{uid}") for procs in directory.rglob("cgroup.procs")
            for pid in procs.read_text().split()]
    assert pids, f"no process in pod {pod['metadata']['name']}'s cgroup"
    candidates = [p for p in pids if b"mlflow" in Path(f"/proc/{p}/cmdline").read_bytes()]
    return min(candidates or pids)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _replicas_owners(deployment: dict[str, Any]) -> set[str]:
    return {m["manager"] for m in deployment["metadata"]["managedFields"]
            if "f:replicas" in m.get("fieldsV1", {}).get("f:spec", {})}


# Three rollouts (fitted, scaled, back) on a node whose 2 cores the rest of the run shares.
@pytest.mark.timeout(1800)
def test_the_platform_fits_a_tainted_node_with_a_ca_psa_and_an_autoscaler(
        reference_platform: Deployed) -> None:
    platform = reference_platform
    deployment_path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/mlflow"
    with _cluster_rules(platform):
        fitted = _fitted_config(platform)
        try:
            result = platform.cli("apply", "-c", str(fitted))
            assert result.returncode == 0, result.stdout + result.stderr

            # The HPA owns the count: the handover kept it, apply no longer sends it, and the
            # real controller (kube-controller-manager) has taken the HPA up.
            def rolled() -> list[dict[str, Any]]:
                pods = platform.server_pods()
                ready = platform.ready_pods()
                fresh = [p for p in ready if p["spec"].get("priorityClassName")]
                return fresh if len(fresh) == 2 == len(pods) else []
            pods = wait_for(rolled, "2 ready server pods, all of the fitted template",
                            timeout=420)
            assert "mlflow-stack" not in _replicas_owners(platform.get(deployment_path))
            hpa_path = (f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/"
                        "horizontalpodautoscalers/mlflow")
            hpa = platform.get(hpa_path)
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)
            wait_for(lambda: platform.get(hpa_path).get("status", {}).get("conditions"),
                     "the HPA controller's conditions on the HPA", timeout=120)

            # Placement as the scheduler and admission saw it: on the tainted node (only the
            # toleration lets them there), with the PriorityClass's value resolved.
            for pod in pods:
                assert pod["spec"]["nodeSelector"] == {POOL_LABEL: "ml"}
                assert pod["spec"]["priority"] == 100000
                assert pod["metadata"]["annotations"]["example.test/owner"] == "ml-platform"
                assert pod["spec"]["nodeName"] == _node_name(platform)

            # In the running server: the CA bundle mounted where its variables point, the
            # extra env and the extra volume.
            pid = _server_pid(platform, pods[0])
            environ = _environ(pid)
            for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
                assert environ.get(name) == CA_PATH, name
            assert Path(f"/proc/{pid}/root{CA_PATH}").read_text() == \
                (platform.home / "ca.pem").read_text()
            assert environ["EXAMPLE_TEAM"] == "ml"
            assert Path(f"/proc/{pid}/root/scratch").is_dir()
            service = platform.get(f"/api/v1/namespaces/{NAMESPACE}/services/mlflow")
            assert service["metadata"]["annotations"]["example.test/scrape"] == "true"

            # Pod Security `restricted` is enforced on the namespace and the platform's pods
            # pass it; a pod that breaks it is refused.
            labels = platform.get(f"/api/v1/namespaces/{NAMESPACE}")["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
            refused = _request(platform, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged-probe"},
                "spec": {"containers": [{"name": "c", "image": platform.node.image("server"),
                                         "securityContext": {"privileged": True}}]}})
            assert refused.status_code == 403, refused.text
            assert 'violates PodSecurity "restricted:latest"' in refused.json()["message"]

            # The HPA scales (here: an operator raises its floor); plan sees no drift and
            # apply writes nothing, so it never undoes the HPA.
            response = _request(platform, "PATCH", deployment_path + "/scale",
                                {"spec": {"replicas": 3}}, "application/merge-patch+json")
            assert response.status_code == 200, response.text
            plan = platform.cli("plan", "-c", str(fitted))
            assert plan.returncode == 0, plan.stdout + plan.stderr
            assert "No changes" in plan.stdout, plan.stdout
            again = platform.cli("apply", "-c", str(fitted))
            assert again.returncode == 0 and "No changes" in again.stdout, again.stdout
            assert platform.get(deployment_path)["spec"]["replicas"] == 3
        finally:
            # Untainted first: the original template has no toleration to get back on the node.
            _set_node(platform, None, None)
            back = platform.cli("apply", "-c", str(platform.config))
            assert back.returncode == 0, back.stdout + back.stderr
            wait_for(lambda: not any(p["spec"].get("priorityClassName")
                                     for p in platform.server_pods()),
                     "the fitted pods replaced by the original template", timeout=420)
