"""Which doctor checks run for a platform, in which order, and one run of them."""

from __future__ import annotations

from collections.abc import Callable

from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import Target, includes_kubernetes
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.doctor.cluster import session
from mlflow_stack.ops.doctor.cluster.allowed_host import ALLOWED_HOST
from mlflow_stack.ops.doctor.cluster.api import API
from mlflow_stack.ops.doctor.cluster.migration_job import MIGRATION_JOB
from mlflow_stack.ops.doctor.cluster.pods import PODS
from mlflow_stack.ops.doctor.cluster.pvcs import PVCS
from mlflow_stack.ops.doctor.cluster.tls import TLS
from mlflow_stack.ops.doctor.findings import Finding
from mlflow_stack.ops.doctor.server_process import check_allowed_host, check_server
from mlflow_stack.ops.doctor.sso import (
    check_client_secret,
    check_clock_skew,
    check_group_plugin,
    check_keycloak_client,
    check_oidc_discovery,
)
from mlflow_stack.ops.doctor.stores import (
    check_artifacts_on_volume,
    check_bucket,
    check_database,
    check_database_deployed,
    check_database_in_pod,
)

Check = Callable[[Settings, StateDir], Finding]


def deployed(settings: Settings, target: Target = "auto") -> bool:
    """Whether the platform to check runs on Kubernetes: by `apply`'s rule (the config names a
    cluster, or target "kubernetes"; "services" never)."""
    return includes_kubernetes(settings, target)


def _stateless(check: Callable[[Settings], Finding]) -> Check:
    return lambda settings, state: check(settings)


def checks_for(settings: Settings, target: Target = "auto") -> list[Check]:
    """The local platform's checks; for a deployed platform (see deployed()) the cluster's
    (the cluster package) in place of those that look at a local server process or folder."""
    sso: list[Check] = []
    if settings.auth.provider == "keycloak":
        sso = [check_oidc_discovery, check_keycloak_client, check_client_secret,
               check_group_plugin, check_clock_skew]
    if not deployed(settings, target):
        return [check_server, check_database, check_bucket, *sso, check_allowed_host]
    on_cluster = {name: _stateless(check) for name, check in session.checks().items()}
    return [
        on_cluster[API], on_cluster[PODS], on_cluster[PVCS], on_cluster[MIGRATION_JOB],
        on_cluster[TLS],
        check_database_deployed if settings.database.backend == "postgresql"
        else check_database_in_pod,
        check_bucket if settings.artifacts.backend == "s3" else check_artifacts_on_volume,
        *sso,
        on_cluster[ALLOWED_HOST],
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
