"""The deployed platform under a team's load, on the real node (after test_platform.py, on the
session's `reference_platform`): a 1 GiB artifact under the pod's 1 GiB memory limit, two
replicas sharing sessions, tokens and permissions, the PodDisruptionBudget during a drain, a
rolling upgrade and a killed pod while a client keeps writing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from harness.node import NODE_IP, KubeNode
from harness.node_ingress import GATEWAY
from harness.node_ingress import NAMESPACE as INGRESS_NAMESPACE
from harness.node_platform import HOSTNAME, NAMESPACE, Deployed, wait_for

pytestmark = pytest.mark.integration

API = "/api/2.0/mlflow"

LARGE = """
import hashlib, json, os, sys, tempfile, time
import mlflow
size = int(sys.argv[1])
mlflow.set_experiment("large-artifacts")
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "big.bin")
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for i in range(size >> 20):
            chunk = i.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            handle.write(chunk)
    with mlflow.start_run() as run:
        started = time.monotonic()
        mlflow.log_artifact(path)
        up = time.monotonic() - started
    os.remove(path)
    started = time.monotonic()
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="big.bin",
                                                dst_path=tmp)
    down = time.monotonic() - started
    check = hashlib.sha256()
    with open(local, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            check.update(chunk)
print("RESULT " + json.dumps({"same": check.hexdigest() == digest.hexdigest(),
                               "up": round(up, 1), "down": round(down, 1)}))
"""

# A client logging one metric per request in a bounded loop until the stop file appears: which
# steps were acknowledged (HTTP 200) and how many requests failed, and when.
WRITER = """
import json, os, sys, time
import mlflow
from mlflow.tracking import MlflowClient
stop, limit = sys.argv[1], int(sys.argv[2])
client = MlflowClient()
mlflow.set_experiment(sys.argv[3])
run_id = mlflow.start_run().info.run_id
acked, failures, started = [], [], time.monotonic()
step = 0
while step < limit and not os.path.exists(stop):
    try:
        client.log_metric(run_id, "load", float(step), step=step)
        acked.append(step)
    except Exception as exc:
        text = str(exc)  # the cause (a status, a refused connection) is at its end
        failures.append([round(time.monotonic() - started, 1), type(exc).__name__,
                         text[:120] + " ... " + text[-200:]])
    step += 1
    time.sleep(0.05)
print("RESULT " + json.dumps({"run_id": run_id, "acked": acked, "failures": failures,
                               "seconds": round(time.monotonic() - started, 1)}), flush=True)
"""
# MLflow's client retries a failed request by itself; these keep each attempt visible.
WRITER_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def _pod_memory(node: KubeNode, pod: dict[str, Any]) -> dict[str, float]:
    """The pod's resident memory now and its memory cgroup's peak (MiB)."""
    uid = pod["metadata"]["uid"]
    rss, peak = 0.0, 0.0
    root = Path("/sys/fs/cgroup/memory", node.name)
    for directory in root.rglob(f"pod{uid}"):
        with contextlib.suppress(OSError, ValueError):
            peak = max(peak, int((directory / "memory.max_usage_in_bytes").read_text()) / 2**20)
        for procs in directory.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(psutil.Error):
                    rss += psutil.Process(int(pid)).memory_info().rss / 2**20
    return {"rss": round(rss), "peak": round(peak)}


def test_a_1_gib_artifact_round_trip_under_the_memory_limit(
        reference_platform: Deployed) -> None:
    platform = reference_platform
    pods = platform.ready_pods()
    before = {p["metadata"]["name"]: _pod_memory(platform.node, p) for p in pods}
    outcome = platform.run_python(LARGE, str(1 << 30), env=platform.user_env(), timeout=1500)
    assert outcome["same"], outcome
    after = {p["metadata"]["name"]: _pod_memory(platform.node, p) for p in pods}
    for pod in platform.server_pods():
        status = pod["status"]["containerStatuses"][0]
        assert status["restartCount"] == 0, status  # no OOMKill
    print(f"\n1 GiB artifact: up {outcome['up']} s, down {outcome['down']} s; server pod "
          f"memory (MiB) before {before}, after {after}")


def _pod_urls(platform: Deployed) -> list[str]:
    port = 5000
    return [f"http://{p['status']['podIP']}:{port}" for p in platform.ready_pods()]


def _call(platform: Deployed, base: str, path: str, token: str | None = None,
          cookie: str | None = None, method: str = "GET",
          body: dict[str, Any] | None = None) -> httpx.Response:
    """A request to one pod by its IP, as the Service would deliver it (the public Host)."""
    headers = {"Host": HOSTNAME}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = f"session={cookie}"

    def send() -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=30) as http:
            return http.request(method, f"{base}{path}", headers=headers, json=body)
    return platform.node.in_netns(send)


SESSION_LOGIN = """
import json, os, sys
from urllib.parse import urlsplit
import httpx
sys.path.insert(0, sys.argv[1])
from harness.attacks import login_until_callback
base, host = sys.argv[2:4]
# The login comes from the environment, as the client plugin reads it (never from argv).
user, password = os.environ["MLFLOW_AUTH_USERNAME"], os.environ["MLFLOW_AUTH_PASSWORD"]
pod = urlsplit(base).hostname
jar = {}
# What the Service hands the pod: the public Host. The session cookie is Secure (public scheme
# https), which httpx keeps from plain http: carry the pod's cookies by hand, as attacks.py does
# for Keycloak's.
def to_pod(request):
    if request.url.host == pod:
        request.headers["Host"] = host
        if jar:
            request.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
def from_pod(response):
    if response.request.url.host == pod:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]
with httpx.Client(trust_env=False, timeout=30,
                  event_hooks={"request": [to_pod], "response": [from_pod]}) as http:
    form = login_until_callback(http, base, user, password)
    # Keycloak sends the browser to the public /callback; here it lands on the same pod.
    callback = form.callback.replace("https://" + host, base)
    done = http.get(callback, follow_redirects=False)
    assert done.status_code in (302, 303), (done.status_code, done.text[:300])
    print("RESULT " + json.dumps({"session": jar["session"]}))
"""


def _session_through(platform: Deployed, base: str) -> str:
    """Log in through one pod with Keycloak's login form, as a browser does (run on the cluster
    network: the form is at the in-cluster Keycloak name); the server's session cookie."""
    user = platform.realm_admin
    tests = str(Path(__file__).resolve().parents[1])
    result = platform.run_python(SESSION_LOGIN, tests, base, HOSTNAME,
                                 env=platform.user_env(user))
    return str(result["session"])


def test_two_replicas_share_sessions_tokens_and_permissions(
        reference_platform: Deployed) -> None:
    platform = reference_platform
    config = platform.native_config("replicas.yaml", **{"kubernetes.replicas": 2})
    result = platform.cli("apply", "-c", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    platform.config = config
    wait_for(lambda: len(platform.ready_pods()) == 2, "two Ready server pods")
    pdb = platform.get(f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets")["items"]
    assert len(pdb) == 1 and pdb[0]["spec"]["minAvailable"] == 1, pdb
    first, second = _pod_urls(platform)

    # An API token works against either pod.
    admin_token = platform.token(platform.realm_admin)
    for base in (first, second):
        response = _call(platform, base, f"{API}/experiments/search?max_results=5", admin_token)
        assert response.status_code == 200, (base, response.status_code, response.text[:300])

    # A browser session made through one pod is valid on the other.
    cookie = _session_through(platform, first)
    response = _call(platform, second, f"{API}/experiments/search?max_results=5", cookie=cookie)
    assert response.status_code == 200, (response.status_code, response.text[:300])

    # A permission change made through one pod is enforced by the other.
    user = platform.new_user("replica-user")
    user_token = platform.token(user)
    # The server learns of a user at their first request (grants need the account).
    first_call = _call(platform, second, f"{API}/experiments/search?max_results=1", user_token)
    assert first_call.status_code == 200, first_call.text
    created = _call(platform, first, f"{API}/experiments/create", admin_token, method="POST",
                    body={"name": f"shared-{int(time.time())}"})
    assert created.status_code == 200, created.text
    exp = created.json()["experiment_id"]
    grant = f"{API}/permissions/users/{user.email}/experiments/{exp}"
    for method, permission, expected in (("POST", "NO_PERMISSIONS", 403),
                                         ("PATCH", "READ", 200)):
        changed = _call(platform, first, grant, admin_token, method=method,
                        body={"permission": permission})
        assert changed.status_code in (200, 201), changed.text
        started = time.monotonic()
        wait_for(lambda expected=expected: _call(   # type: ignore[misc]
            platform, second, f"{API}/experiments/get?experiment_id={exp}",
            user_token).status_code == expected, f"{permission} enforced by the other pod",
            timeout=30, interval=0.5)
        print(f"\n{permission} enforced by the other pod after "
              f"{time.monotonic() - started:.1f} s")


def test_the_disruption_budget_keeps_a_pod_during_a_drain(reference_platform: Deployed) -> None:
    platform = reference_platform
    node_name = platform.node.node_name
    pods = platform.ready_pods()
    assert len(pods) == 2, "needs the two replicas of the test before"
    with platform.node.api.admin_http() as http:
        cordon = http.patch(f"/api/v1/nodes/{node_name}", json={"spec": {"unschedulable": True}},
                            headers={"Content-Type": "application/merge-patch+json"})
        assert cordon.status_code == 200, cordon.text
        try:
            answers = []
            for pod in pods:   # what `kubectl drain` does, pod by pod
                name = pod["metadata"]["name"]
                answers.append(http.post(
                    f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/eviction",
                    json={"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": name, "namespace": NAMESPACE}}).status_code)
            # The first goes; the second is refused while no replacement can be scheduled.
            assert answers == [201, 429], answers
            assert len(platform.ready_pods()) >= 1
        finally:
            http.patch(f"/api/v1/nodes/{node_name}", json={"spec": {"unschedulable": False}},
                       headers={"Content-Type": "application/merge-patch+json"})
    wait_for(lambda: len(platform.ready_pods()) == 2, "two Ready pods after the drain")


def _start_writer(platform: Deployed, name: str) -> tuple[Any, Path, Path]:
    stop = platform.home / f"{name}.stop"
    log = platform.home / f"{name}.log"
    proc = platform.start_python(WRITER, str(stop), "100000", name,
                                 env={**platform.user_env(), **WRITER_ENV}, log=log)
    wait_for(lambda: "load" in _metric_history(platform, name) or proc.poll() is not None,
             f"{name} writing", timeout=120, interval=1)
    return proc, stop, log


def _stop_writer(proc: Any, stop: Path, log: Path) -> dict[str, Any]:
    stop.touch()
    proc.wait(timeout=120)
    text = log.read_text()
    line = next((ln for ln in text.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, text[-3000:]
    return dict(json.loads(line.removeprefix("RESULT ")))


def _metric_history(platform: Deployed, experiment: str) -> dict[str, list[int]]:
    code = f"""
import json, mlflow
from mlflow.tracking import MlflowClient
client = MlflowClient()
exp = mlflow.get_experiment_by_name({experiment!r})
steps = []
if exp is not None:
    for run in client.search_runs([exp.experiment_id]):
        steps += [m.step for m in client.get_metric_history(run.info.run_id, "load")]
print("RESULT " + json.dumps({{"load": sorted(steps)}} if steps else {{}}))
"""
    return platform.run_python(code, env=platform.user_env(), timeout=300)


def test_a_rolling_upgrade_loses_no_acknowledged_write(reference_platform: Deployed) -> None:
    platform = reference_platform
    new_tag = "upgrade-test"
    platform.node.tag_image("server", f"localhost/library/mlflow-custom:{new_tag}")
    config = platform.native_config("upgrade.yaml", **{"kubernetes.replicas": 2,
                                                       "registry.tag": new_tag})
    proc, stop, log = _start_writer(platform, "during-upgrade")
    started = time.monotonic()
    result = platform.cli("apply", "-c", str(config), "--backup-dir",
                          str(platform.home / "backups"))
    upgrade_seconds = time.monotonic() - started
    time.sleep(5)  # a few writes against the new pods only
    outcome = _stop_writer(proc, stop, log)
    assert result.returncode == 0, result.stdout + result.stderr
    platform.config = config
    out = result.stdout + result.stderr
    assert "backup" in out.lower(), out
    jobs = platform.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")["items"]
    assert [j["status"].get("succeeded") for j in jobs] == [1], jobs  # one Job, the new one
    images = {p["spec"]["containers"][0]["image"] for p in platform.ready_pods()}
    assert images == {f"localhost/library/mlflow-custom:{new_tag}"}, images
    stored = set(_metric_history(platform, "during-upgrade")["load"])
    lost = [step for step in outcome["acked"] if step not in stored]
    assert not lost, f"acknowledged writes lost in the upgrade: {lost[:20]}"
    print(f"\nrolling upgrade: apply {upgrade_seconds:.0f} s; client {len(outcome['acked'])} "
          f"writes acknowledged, {len(outcome['failures'])} failed: {outcome['failures'][:5]}")
    assert len(outcome["failures"]) <= 5, outcome["failures"]


def test_a_pod_killed_under_load_is_restarted_and_loses_nothing(
        reference_platform: Deployed) -> None:
    platform = reference_platform
    victim = platform.ready_pods()[0]
    restarts = victim["status"]["containerStatuses"][0]["restartCount"]
    proc, stop, log = _start_writer(platform, "during-kill")
    uid = victim["metadata"]["uid"]
    killed = 0
    for directory in Path("/sys/fs/cgroup/memory", platform.node.name).rglob(f"pod{uid}"):
        for procs in directory.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
    assert killed, "no process found in the victim pod's cgroup"

    def restarted() -> bool:
        pod = platform.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{victim['metadata']['name']}")
        status = pod["status"]["containerStatuses"][0]
        return bool(status["restartCount"] > restarts and status.get("ready"))
    started = time.monotonic()
    wait_for(restarted, "the killed container restarted and Ready", timeout=240)
    back = time.monotonic() - started
    outcome = _stop_writer(proc, stop, log)
    stored = set(_metric_history(platform, "during-kill")["load"])
    lost = [step for step in outcome["acked"] if step not in stored]
    assert not lost, f"acknowledged writes lost: {lost[:20]}"
    print(f"\npod kill: Ready again after {back:.0f} s; {len(outcome['acked'])} writes "
          f"acknowledged, {len(outcome['failures'])} failed: {outcome['failures'][:5]}")


def test_the_platform_serves_through_a_gateway_api_httproute(
        reference_platform: Deployed) -> None:
    """kubernetes.route: httproute on the real Gateway API CRDs: Traefik accepts the platform's
    route and serves it; back to the Ingress afterwards (the tests after this use it)."""
    platform = reference_platform
    current = yaml.safe_load(platform.config.read_text())
    routed = platform.home / "httproute.yaml"
    routed.write_text(yaml.safe_dump({**current, "kubernetes": {
        **current["kubernetes"], "route": "httproute", "gateway_name": GATEWAY,
        "gateway_namespace": INGRESS_NAMESPACE}}))
    result = platform.cli("apply", "-c", str(routed))
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        route = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/httproutes/mlflow"

        def accepted() -> bool:
            parents = platform.get(route).get("status", {}).get("parents", [])
            return any(c["type"] == "Accepted" and c["status"] == "True"
                       for p in parents for c in p.get("conditions", []))
        wait_for(accepted, "the HTTPRoute Accepted by the Gateway", timeout=60, interval=1)
        ingresses = platform.get(f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/ingresses")
        assert not ingresses["items"], "the Ingress is pruned when the route replaces it"

        def health() -> bool:
            def get() -> httpx.Response:
                with httpx.Client(trust_env=False, timeout=10) as http:
                    return http.get(f"http://{NODE_IP}/health", headers={"Host": HOSTNAME})
            return platform.node.in_netns(get).status_code == 200
        wait_for(health, "/health through the Gateway's listener", timeout=60, interval=1)
    finally:
        back = platform.cli("apply", "-c", str(platform.config))
        assert back.returncode == 0, back.stdout + back.stderr
