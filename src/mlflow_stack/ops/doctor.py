"""`doctor`: the reference's Troubleshooting section, automated.

Each check returns a Finding: what was found and, when it is a problem, the fix to try. Checks
never change anything. A check that cannot run because an earlier one failed says so.

For a platform deployed on Kubernetes (the config names a cluster, as for `apply`, or target
"kubernetes") the cluster checks in doctor_cluster (API, pods, PVCs, migration Job, TLS
certificate, the Deployment's allowed hosts) replace the checks of a local server process and
local folders; the database, bucket and Keycloak checks run as for the local platform.
"""

from __future__ import annotations

import email.utils
import importlib.util
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import Target, includes_kubernetes
from mlflow_stack.errors import StackError
from mlflow_stack.launch.oidc_auth import discovery_url, issuer
from mlflow_stack.local import process
from mlflow_stack.local.state import StateDir

Status = Literal["ok", "problem", "skipped"]
MAX_CLOCK_SKEW_SECONDS = 30.0


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    finding: str
    fix: str = ""


def ok(check: str, finding: str) -> Finding:
    return Finding(check, "ok", finding)


def problem(check: str, finding: str, fix: str) -> Finding:
    return Finding(check, "problem", finding, fix)


def skipped(check: str, why: str) -> Finding:
    return Finding(check, "skipped", why)


def host_allowed(host: str, allowed: str) -> bool:
    """Whether MLflow's host check lets `host` through `allowed` (the comma-separated
    MLFLOW_SERVER_ALLOWED_HOSTS value), by MLflow's own matching."""
    from mlflow.server.security_utils import is_allowed_host_header

    patterns = [p.strip() for p in allowed.split(",") if p.strip()]
    return bool(is_allowed_host_header(patterns, host))


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


def check_database(settings: Settings, state: StateDir, *, deployed: bool = False) -> Finding:
    from mlflow_stack.launch import migrations
    from mlflow_stack.ops import schema

    name = "database"
    upgrade = ("mlflow-stack upgrade (backs up the databases; the migration Job upgrades the "
               "schema before the new pods start)" if deployed else
               "mlflow-stack upgrade (backs up the databases, migrates, restarts the server)")
    try:
        revision = schema.current_revision(settings, state.data_dir)
    except StackError as exc:
        return problem(name, exc.message, exc.hint or "check database.host/port and password")
    head = migrations.mlflow_head_revision()
    if revision is None:
        return problem(name, "the database has no MLflow schema",
                       f"mlflow-stack {'apply' if deployed else 'up'} creates it (or restore "
                       "a backup)")
    if revision != head:
        return problem(name, f"schema at revision {revision}, MLflow {head} expected", upgrade)
    where = (f"{settings.database.host}:{settings.database.port}/{settings.database.name}"
             if settings.database.backend == "postgresql" else "sqlite")
    return ok(name, f"{where} reachable, schema current ({head})")


def check_bucket(settings: Settings, state: StateDir) -> Finding:
    name = "artifact store"
    if settings.artifacts.backend == "local":
        path = state.artifacts_dir
        if not path.is_dir():
            return problem(name, f"{path} is missing", "mlflow-stack up recreates it")
        return ok(name, f"local folder {path}")
    from botocore.exceptions import BotoCoreError, ClientError

    from mlflow_stack.components import bucket

    key = ".mlflow-stack-doctor"
    try:
        client = bucket.s3_client(settings)
        client.put_object(Bucket=settings.artifacts.bucket, Key=key, Body=b"doctor")
        client.delete_object(Bucket=settings.artifacts.bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return problem(name, f"bucket {settings.artifacts.bucket!r} does not exist",
                           "mlflow-stack apply (or up) creates it; restore artifacts from a "
                           "backup if it was deleted")
        return problem(name, f"bucket {settings.artifacts.bucket!r} not writable ({code})",
                       "check the S3 keys and the bucket policy")
    except (BotoCoreError, StackError) as exc:
        return problem(name, f"S3 at {settings.artifacts.endpoint_url}: {exc}",
                       "check artifacts.endpoint_url and that the S3 server runs")
    return ok(name, f"bucket {settings.artifacts.bucket} reachable and writable")


def check_oidc_discovery(settings: Settings, state: StateDir) -> Finding:
    name = "OIDC discovery"
    url = discovery_url(settings)
    try:
        response = httpx.get(url, timeout=10, verify=settings.auth.verify_tls)
    except httpx.HTTPError as exc:
        return problem(name, f"{url} unreachable: {exc}",
                       "check auth.keycloak_url and that Keycloak runs")
    if response.status_code != 200:
        return problem(name, f"{url} answered {response.status_code}",
                       f"check that realm {settings.auth.realm!r} exists")
    issuer_seen = response.json().get("issuer")
    if issuer_seen != issuer(settings):
        return problem(name, f"Keycloak calls itself {issuer_seen}, the server expects "
                       f"{issuer(settings)}", "use the same host spelling in auth.keycloak_url "
                       "as Keycloak's hostname setting (localhost is not 127.0.0.1)")
    return ok(name, f"{url} answers, issuer matches")


def check_keycloak_client(settings: Settings, state: StateDir) -> Finding:
    from mlflow_stack.components import keycloak
    from mlflow_stack.deploy import plan_system

    name = "Keycloak client and roles"
    try:
        pending = [c for c in plan_system(keycloak.SYSTEM, settings) if c.is_change]
    except StackError as exc:
        return problem(name, exc.message, exc.hint or "check the Keycloak admin credentials")
    if pending:
        listed = "; ".join(f"{c.action} {c.target}" + (f" ({c.detail})" if c.detail else "")
                           for c in pending[:6])
        return problem(name, f"{len(pending)} difference(s) from the config: {listed}",
                       "mlflow-stack apply repairs them (mlflow-stack plan shows them)")
    return ok(name, f"client {settings.auth.client_id}: redirect URIs, scopes, mappers and "
                     "admin role grants match the config")


def check_client_secret(settings: Settings, state: StateDir) -> Finding:
    """The secret the server would use, tested against Keycloak's token endpoint."""
    name = "OIDC client secret"
    secret = settings.secrets.oidc_client_secret
    if secret is None:
        return ok(name, "not set: read back from Keycloak at start-up")
    url = f"{issuer(settings)}/protocol/openid-connect/token"
    try:
        # A password grant for a user that does not exist: Keycloak authenticates the client
        # first, so a right secret gets "invalid_grant" (bad user), a wrong one a client error.
        response = httpx.post(url, timeout=10, verify=settings.auth.verify_tls, data={
            "grant_type": "password", "client_id": settings.auth.client_id,
            "client_secret": secret.get_secret_value(),
            "username": "mlflow-stack-doctor-probe", "password": secrets.token_hex(16)})
    except httpx.HTTPError as exc:
        return problem(name, f"{url} unreachable: {exc}", "check auth.keycloak_url")
    error = response.json().get("error", "") if response.status_code != 200 else ""
    if error != "invalid_grant":
        return problem(name, f"Keycloak refuses the configured client secret ({error})",
                       "unset MLFLOW_STACK_OIDC_CLIENT_SECRET to read it back from Keycloak, "
                       "or copy the current secret from the client's Credentials tab")
    return ok(name, "Keycloak accepts the configured client secret")


def check_group_plugin(settings: Settings, state: StateDir) -> Finding:
    name = "group plugin"
    module = settings.auth.group_plugin
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return problem(name, f"{module!r} is not importable by the server",
                       "install mlflow-stack into the server's environment (it ships "
                       "mlflow_keycloak_groups) or fix auth.group_plugin")
    return ok(name, f"{module} importable")


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


def check_clock_skew(settings: Settings, state: StateDir) -> Finding:
    name = "clock skew to Keycloak"
    try:
        response = httpx.get(discovery_url(settings), timeout=10,
                             verify=settings.auth.verify_tls)
    except httpx.HTTPError as exc:
        return skipped(name, f"Keycloak unreachable: {exc}")
    date = response.headers.get("date")
    if not date:
        return skipped(name, "Keycloak sent no Date header")
    skew = time.time() - email.utils.parsedate_to_datetime(date).timestamp()
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        return problem(name, f"this clock is {skew:+.0f} s off Keycloak's",
                       "synchronise clocks (NTP): tokens look expired or not yet valid")
    return ok(name, f"{skew:+.1f} s")


Check = Callable[[Settings, StateDir], Finding]


def deployed(settings: Settings, target: Target = "auto") -> bool:
    """Whether the platform to check runs on Kubernetes: by `apply`'s rule (the config names a
    cluster, or target "kubernetes"; "services" never)."""
    return includes_kubernetes(settings, target)


def _stateless(check: Callable[[Settings], Finding]) -> Check:
    return lambda settings, state: check(settings)


def check_database_deployed(settings: Settings, state: StateDir) -> Finding:
    return check_database(settings, state, deployed=True)


def check_database_in_pod(settings: Settings, state: StateDir) -> Finding:
    return skipped("database", "SQLite on the server's volume inside the pod: not reachable "
                   "from here (pods and PVCs show whether the server starts)")


def check_artifacts_on_volume(settings: Settings, state: StateDir) -> Finding:
    return ok("artifact store", f"local artifacts on PVC {settings.storage.local_pvc_name} "
              "(see PVCs)")


def checks_for(settings: Settings, target: Target = "auto") -> list[Check]:
    """The local platform's checks; for a deployed platform (see deployed()) the cluster's
    (doctor_cluster) in place of those that look at a local server process or folder."""
    sso: list[Check] = []
    if settings.auth.provider == "keycloak":
        sso = [check_oidc_discovery, check_keycloak_client, check_client_secret,
               check_group_plugin, check_clock_skew]
    if not deployed(settings, target):
        return [check_server, check_database, check_bucket, *sso, check_allowed_host]
    from mlflow_stack.ops import doctor_cluster as cluster

    on_cluster = {name: _stateless(check) for name, check in cluster.checks().items()}
    return [
        on_cluster[cluster.API], on_cluster[cluster.PODS], on_cluster[cluster.PVCS],
        on_cluster[cluster.MIGRATION_JOB], on_cluster[cluster.TLS],
        check_database_deployed if settings.database.backend == "postgresql"
        else check_database_in_pod,
        check_bucket if settings.artifacts.backend == "s3" else check_artifacts_on_volume,
        *sso,
        on_cluster[cluster.ALLOWED_HOST],
    ]


def run(settings: Settings, state: StateDir,
        on_finding: Callable[[Finding], None] | None = None,
        target: Target = "auto") -> list[Finding]:
    findings = []
    for check in checks_for(settings, target):
        finding = check(settings, state)
        findings.append(finding)
        if on_finding:
            on_finding(finding)
    return findings
