"""The local server process: running and healthy, and letting the public host through."""

from __future__ import annotations

import httpx

from mlflow_stack.config.model import Settings
from mlflow_stack.local import process
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.doctor.findings import Finding, host_allowed, ok, problem, skipped


def check_server(settings: Settings, state: StateDir) -> Finding:
    name = "server process"
    record = process.find_running(state).record
    if record is None:
        return problem(name, f"no server running for {state.root}",
                       "mlflow-stack up (and mlflow-stack logs for why it stopped)")
    try:
        code = httpx.get(f"{record.url}/health", timeout=5).status_code
    except httpx.HTTPError as exc:
        return problem(name, f"pid {record.pid} runs but {record.url}/health fails: {exc}",
                       "mlflow-stack logs -n 200; restart with mlflow-stack down && up")
    if code != 200:
        return problem(name, f"{record.url}/health answered {code}", "mlflow-stack logs -n 200")
    return ok(name, f"pid {record.pid} healthy at {record.url}")


def check_allowed_host(settings: Settings, state: StateDir) -> Finding:
    """The public host must be among the Host headers the running server accepts (MLflow 3
    answers 403 otherwise, e.g. through an ingress). Read from the server's own environment:
    with SSO every API request is authenticated before the host check could be observed."""
    import psutil

    name = "public host allowed"
    host = settings.public_hostname
    record = process.find_running(state).record
    if host is None:
        return ok(name, "no public host name configured (loopback only)")
    if record is None:
        return skipped(name, "server not running")
    try:
        allowed = psutil.Process(record.pid).environ().get("MLFLOW_SERVER_ALLOWED_HOSTS", "")
    except psutil.Error as exc:
        return skipped(name, f"cannot read the server's environment: {exc}")
    if not host_allowed(host, allowed):
        return problem(name, f"the running server refuses Host {host} (allowed: "
                       f"{allowed or 'MLflow defaults'})",
                       "restart it with this config (mlflow-stack down && mlflow-stack up); "
                       "set server.hostname / domain so the host is allowed")
    return ok(name, f"Host {host} allowed")
