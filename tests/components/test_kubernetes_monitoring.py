"""The ServiceMonitor and PrometheusRule (kubernetes.monitoring) against the Prometheus
Operator's REAL CRDs in a real kube-apiserver: the API server validates them against the CRDs'
OpenAPI schemas; apply creates them, a second apply writes nothing, switching monitoring off
prunes them (in Prometheus's namespace too). Every alert expression is parsed by Prometheus's
own PromQL parser (harness/monitoring.py: both built from their Go modules)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from harness.fake_controllers import FakeControllers
from harness.kube import SECRET_VALUES, settings_with
from harness.kubeapi import KubeAPIServer, start_kube_apiserver
from harness.monitoring import MonitoringTools, build_tools, install_crds, promql_errors
from harness.waits import retry_while
from mlflow_stack.components import kubernetes as k8s
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import plan_system
from mlflow_stack.kubernetes.client import KubernetesError
from mlflow_stack.manifests import monitoring
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration
RBAC_DOC = Path(__file__).resolve().parents[2] / "docs" / "rbac" / "installer-role.yaml"


@pytest.fixture(scope="module")
def tools(kube_api: KubeAPIServer) -> Iterator[MonitoringTools]:
    built = build_tools()
    assert install_crds(kube_api, built) == ["servicemonitors.monitoring.coreos.com",
                                             "prometheusrules.monitoring.coreos.com"]
    yield built


def make_settings(api: KubeAPIServer, ns: str, monitoring_ns: str, on: bool = True
                  ) -> Settings:
    data: dict[str, Any] = {
        "database": {"backend": "postgresql", "host": "postgresql.db.svc.cluster.local"},
        "artifacts": {"backend": "s3", "endpoint_url": "https://s3.example.test"},
        "registry": {"host": "registry.example.test", "robot_name": "deployer"},
        "kubernetes": {
            "namespace": ns, "kubeconfig": str(api.admin_kubeconfig),
            "metrics_namespace": monitoring_ns,
            "monitoring": {
                "service_monitor": {"enabled": on, "namespace": monitoring_ns,
                                    "interval": "15s", "scrape_timeout": "5s",
                                    "labels": {"release": "kube-prometheus-stack"}},
                "alerts": {"enabled": on, "labels": {"release": "kube-prometheus-stack"}},
            }},
        "discovery": {"enabled": False},
    }
    values: dict[str, Any] = {k: SecretStr(v) for k, v in SECRET_VALUES.items()}
    return settings_with(data, Secrets.model_construct(**values))


def apply(settings: Settings, api: KubeAPIServer) -> k8s.Report:
    with FakeControllers(api, settings.kubernetes.namespace):
        return k8s.apply_objects(settings, NullProgress(), job_timeout=30, rollout_timeout_s=30)


def get(api: KubeAPIServer, plural: str, ns: str, name: str) -> tuple[int, dict[str, Any]]:
    with api.admin_http() as http:
        r = http.get(f"/apis/monitoring.coreos.com/v1/namespaces/{ns}/{plural}/{name}")
        return r.status_code, r.json()


def server_side_apply(api: KubeAPIServer, obj: dict[str, Any], plural: str
                      ) -> tuple[int, str]:
    meta = obj["metadata"]
    with api.admin_http() as http:
        r = http.patch(
            f"/apis/monitoring.coreos.com/v1/namespaces/{meta['namespace']}/{plural}/"
            f"{meta['name']}", params={"fieldManager": "test", "dryRun": "All"},
            content=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"})
        return r.status_code, r.text


def test_apply_creates_them_validated_and_switching_off_prunes_them(
        kube_api: KubeAPIServer, tools: MonitoringTools) -> None:
    ns, mon = f"mlf-{uuid.uuid4().hex[:8]}", f"mon-{uuid.uuid4().hex[:8]}"
    with kube_api.admin_http() as http:
        r = http.post("/api/v1/namespaces",
                      json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": mon}})
        assert r.status_code == 201, r.text
    settings = make_settings(kube_api, ns, mon)
    first = apply(settings, kube_api)
    created = {c.target for c in first.changes if c.action == "create"}
    assert {f"ServiceMonitor {mon}/mlflow", f"PrometheusRule {ns}/mlflow"} <= created

    status, sm = get(kube_api, "servicemonitors", mon, "mlflow")
    assert status == 200, sm
    assert sm["spec"]["endpoints"][0]["scrapeTimeout"] == "5s"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [ns]}
    status, rule = get(kube_api, "prometheusrules", ns, "mlflow")
    assert status == 200, rule
    assert len(rule["spec"]["groups"][0]["rules"]) == 4

    second = apply(settings, kube_api)
    assert [c for c in second.changes if c.action != "unchanged"] == []
    assert second.writes == 0

    off = make_settings(kube_api, ns, mon, on=False)
    planned = {c.target: c.action for c in plan_system(k8s.SYSTEM, off)
               if c.action != "unchanged"}
    assert planned == {f"ServiceMonitor {mon}/mlflow": "delete",
                       f"PrometheusRule {ns}/mlflow": "delete"}
    apply(off, kube_api)
    assert get(kube_api, "servicemonitors", mon, "mlflow")[0] == 404
    assert get(kube_api, "prometheusrules", ns, "mlflow")[0] == 404

    # On again, then a config without the monitoring section at all (it no longer names the
    # ServiceMonitor's namespace): apply still finds and prunes both.
    apply(settings, kube_api)
    bare = settings.model_copy(deep=True)
    bare.kubernetes.monitoring = type(bare.kubernetes.monitoring)()
    bare.kubernetes.metrics_namespace = None
    pruned = {c.target for c in plan_system(k8s.SYSTEM, bare) if c.action == "delete"}
    assert {f"ServiceMonitor {mon}/mlflow", f"PrometheusRule {ns}/mlflow"} <= pruned, pruned
    apply(bare, kube_api)
    assert get(kube_api, "servicemonitors", mon, "mlflow")[0] == 404
    assert get(kube_api, "prometheusrules", ns, "mlflow")[0] == 404


def test_the_api_server_really_validates_against_the_crd_schema(
        kube_api: KubeAPIServer, tools: MonitoringTools) -> None:
    # What a passing apply is worth: the same objects with a value the CRD refuses get 422.
    settings = make_settings(kube_api, "default", "default")
    sm = monitoring.service_monitor(settings)
    assert server_side_apply(kube_api, sm, "servicemonitors")[0] in (200, 201)  # dry run
    sm["spec"]["endpoints"][0]["interval"] = "30 seconds"
    status, text = server_side_apply(kube_api, sm, "servicemonitors")
    assert status == 422 and "interval" in text, text
    rule = monitoring.prometheus_rule(settings)
    assert server_side_apply(kube_api, rule, "prometheusrules")[0] in (200, 201)
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    status, text = server_side_apply(kube_api, rule, "prometheusrules")
    assert status == 422 and "for" in text, text


def test_every_alert_expression_parses_with_prometheus(tools: MonitoringTools,
                                                        kube_api: KubeAPIServer) -> None:
    settings = make_settings(kube_api, "ml", "monitoring")
    exprs = [r["expr"] for r in monitoring.alert_rules(settings)]
    assert promql_errors(tools, exprs) == {}
    # The parser is real: a broken expression is reported.
    unbalanced = exprs[1].replace(") /", " /", 1)
    misspelled = exprs[2].replace("histogram_quantile", "histogram_quantil", 1)
    found = promql_errors(tools, [unbalanced, "up", misspelled])
    assert found.keys() == {unbalanced, misspelled}, found
    assert "unknown function" in found[misspelled], found


def test_a_cluster_without_the_crds_is_named_before_any_write(tmp_path: Path) -> None:
    # Its own API server: the session's has the CRDs once the tests above ran.
    bare = start_kube_apiserver(tmp_path / "bare")
    try:
        ns = f"mlf-{uuid.uuid4().hex[:8]}"
        settings = make_settings(bare, ns, ns)
        with pytest.raises(KubernetesError) as refused:
            plan_system(k8s.SYSTEM, settings)
        message = str(refused.value) + " " + (refused.value.hint or "")
        assert "does not serve monitoring.coreos.com/v1 ServiceMonitor" in message, message
        assert "Prometheus Operator's CRDs" in message, message
        with bare.admin_http() as http:  # nothing was written: not even the namespace
            assert http.get(f"/api/v1/namespaces/{ns}").status_code == 404
    finally:
        bare.stop()


def _installer_without_monitoring(api: KubeAPIServer, ns: str) -> Path:
    """A ServiceAccount bound to docs/rbac/installer-role.yaml as it was before
    kubernetes.monitoring (its monitoring.coreos.com rule taken out); its kubeconfig."""
    system_ns = f"{ns}-sys"
    with api.admin_http() as http:
        for name in (system_ns, ns):
            r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": name}})
            assert r.status_code == 201, r.text
        for doc in yaml.safe_load_all(RBAC_DOC.read_text()):
            meta = doc["metadata"]
            if meta.get("namespace") not in (None, "mlflow"):
                continue  # code-server, the TLS source, S3 keys: not used by these settings
            if doc["kind"].startswith("Cluster"):
                meta["name"] = f"{meta['name']}-{ns}"
            if meta.get("namespace") == "mlflow":
                meta["namespace"] = ns
            if doc.get("roleRef", {}).get("kind") == "ClusterRole":
                doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{ns}"
            for subject in doc.get("subjects", []):
                subject["namespace"] = system_ns
            rules = [r for r in doc.get("rules", [])
                     if "monitoring.coreos.com" not in r["apiGroups"]]
            for rule in rules:
                if "resourceNames" in rule:
                    rule["resourceNames"] = [ns if n == "mlflow" else n
                                             for n in rule["resourceNames"]]
            if "rules" in doc:
                doc["rules"] = rules
            group = "rbac.authorization.k8s.io/v1"
            plural = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
                      "Role": "roles", "RoleBinding": "rolebindings"}[doc["kind"]]
            where = f"/namespaces/{meta['namespace']}" if "namespace" in meta else ""
            r = http.post(f"/apis/{group}{where}/{plural}", json=doc)
            assert r.status_code == 201, r.text
    token = api.service_account_token(system_ns, "mlflow-stack-installer")
    return api.token_kubeconfig(token, name=f"installer-{ns}")


def _names_operator_kind(message: str) -> bool:
    return "ServiceMonitor" in message or "PrometheusRule" in message


def test_an_installer_role_without_monitoring_still_plans_with_monitoring_off(
        kube_api: KubeAPIServer, tools: MonitoringTools) -> None:
    ns = f"mlf-{uuid.uuid4().hex[:8]}"
    kubeconfig = _installer_without_monitoring(kube_api, ns)

    def settings(on: bool) -> Settings:
        s = make_settings(kube_api, ns, ns, on=on)
        s.kubernetes.kubeconfig = kubeconfig
        return s

    def plan(on: bool) -> list[Any]:  # RBAC reaches the authorizer through an informer
        return retry_while(lambda: plan_system(k8s.SYSTEM, settings(on)),
                           lambda e: isinstance(e, KubernetesError)
                           and not _names_operator_kind(e.message), 15.0, interval=0.3)

    # Off: the prune listing's 403 for the operator's kinds is not an error.
    assert any(c.action == "create" for c in plan(False))
    # On: refused, naming the kind and pointing at the role.
    with pytest.raises(KubernetesError, match="refused") as refused:
        plan(True)
    assert _names_operator_kind(refused.value.message), refused.value.message
    assert "installer-role.yaml" in (refused.value.hint or "")
