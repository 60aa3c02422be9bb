"""The Prometheus Operator's real CRDs and Prometheus's real PromQL parser, for the monitoring
tests (manifests/monitoring.py).

Both come from their published Go modules, built and cached by
scripts/build-monitoring-tools.sh (the CRDs copied out of the prometheus-operator module zip,
``promql-check`` built on prometheus/promql/parser). No Prometheus or operator runs: the API
server validates the objects against the CRDs' OpenAPI schemas, and the parser checks every
alert expression.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .kubeapi import KubeAPIServer

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-monitoring-tools.sh"
BUILD_TIMEOUT = 30 * 60.0  # cold: ~5 min of module downloads and compiling on 2 cores
CRD_FILES = ("monitoring.coreos.com_servicemonitors.yaml",
             "monitoring.coreos.com_prometheusrules.yaml")
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CRD_TIMEOUT = 60.0


@dataclass(frozen=True)
class MonitoringTools:
    directory: Path

    @property
    def promql_check(self) -> Path:
        return self.directory / "promql-check"

    def crds(self) -> list[dict[str, Any]]:
        docs = []
        for name in CRD_FILES:
            docs += [d for d in yaml.safe_load_all((self.directory / name).read_text())
                     if d and d.get("kind") == "CustomResourceDefinition"]
        return docs


def build_tools() -> MonitoringTools:
    """Run the build script (a no-op when up to date)."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT, check=False)
    if result.stderr:
        sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT.name} failed (exit {result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    return MonitoringTools(Path(result.stdout.strip().splitlines()[-1]))


def install_crds(api: KubeAPIServer, tools: MonitoringTools,
                 timeout: float = CRD_TIMEOUT) -> list[str]:
    """Create the CRDs (kept when they exist already) and wait until each is Established."""
    names = []
    with api.admin_http() as http:
        for crd in tools.crds():
            response = http.post(CRD_PATH, json=crd)
            if response.status_code not in (201, 409):
                raise RuntimeError(f"creating CRD {crd['metadata']['name']}: "
                                   f"{response.status_code} {response.text[:500]}")
            names.append(crd["metadata"]["name"])
        pending = set(names)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                response = http.get(f"{CRD_PATH}/{name}")
                conditions = ((response.json().get("status") or {}).get("conditions") or []
                              if response.status_code == 200 else [])
                if any(c["type"] == "Established" and c["status"] == "True"
                       for c in conditions):
                    pending.discard(name)
            if pending:
                time.sleep(0.5)
        # Established is not yet served: a list right after may get "storage is
        # (re)initializing"; wait until each kind lists.
        paths = [f"/apis/{c['spec']['group']}/{c['spec']['versions'][0]['name']}/"
                 f"{c['spec']['names']['plural']}" for c in tools.crds()]
        while paths and not pending and time.monotonic() < deadline:
            paths = [p for p in paths if http.get(p).status_code != 200]
            if paths:
                time.sleep(0.5)
    if pending or paths:
        raise RuntimeError(f"CRDs not served after {timeout:.0f} s: "
                           f"{sorted(pending) or paths}")
    return names


def promql_errors(tools: MonitoringTools, exprs: list[str]) -> dict[str, str]:
    """Prometheus's parser on each expression: {expression: error} for those that fail."""
    result = subprocess.run([str(tools.promql_check)], input=json.dumps(exprs),
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"promql-check failed (exit {result.returncode}): {result.stderr}")
    parsed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["expr"] for p in parsed] == exprs, result.stdout
    return {p["expr"]: p["error"] for p in parsed if p["error"]}
