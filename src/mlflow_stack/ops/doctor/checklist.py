"""Which doctor checks run for a platform, in which order, and one run of them."""

from __future__ import annotations

from collections.abc import Callable

from mlflow_stack.components.registry import Entry
from mlflow_stack.config.existing_secrets import in_use
from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import Target, entries_for, includes_kubernetes
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.doctor.cluster import connection
from mlflow_stack.ops.doctor.cluster.allowed_host import ALLOWED_HOST
from mlflow_stack.ops.doctor.cluster.api import API
from mlflow_stack.ops.doctor.cluster.existing_secrets import EXISTING_SECRETS
from mlflow_stack.ops.doctor.cluster.migration_job import MIGRATION_JOB
from mlflow_stack.ops.doctor.cluster.pods import PODS
from mlflow_stack.ops.doctor.cluster.pvcs import PVCS
from mlflow_stack.ops.doctor.cluster.tls import TLS
from mlflow_stack.ops.doctor.data import (
    check_artifact_folder,
    check_artifacts_on_volume,
    check_database,
    check_database_deployed,
    check_database_in_pod,
)
from mlflow_stack.ops.doctor.findings import Finding
from mlflow_stack.ops.doctor.server_process import check_allowed_host, check_server
from mlflow_stack.ops.doctor.sso import check_group_plugin, check_group_plugin_deployed

Check = Callable[[Settings, StateDir], list[Finding]]
OneCheck = Callable[[Settings, StateDir], Finding]


def deployed(settings: Settings, target: Target = "auto") -> bool:
    """Whether the platform to check runs on Kubernetes: by `apply`'s rule (the config names a
    cluster, or target "kubernetes"; "services" never)."""
    return includes_kubernetes(settings, target)


def _one(check: OneCheck) -> Check:
    return lambda settings, state: [check(settings, state)]


def _stateless(check: Callable[[Settings], Finding]) -> Check:
    return lambda settings, state: [check(settings)]


def _system(entry: Entry) -> Check:
    return lambda settings, state: entry.system.check(settings)


def checks_for(settings: Settings, target: Target = "auto") -> list[Check]:
    """Every enabled system's own checks (components.registry: Keycloak, PostgreSQL, the bucket,
    the Kubernetes objects), around the platform's: the server process and its allowed hosts,
    the schema, the group plugin, a local artifact folder. For a deployed platform (see
    deployed()) the cluster's checks (the cluster package) replace those that look at a local
    server process or folder."""
    systems = [_system(e) for e in entries_for(target) if e.skip_reason(settings) is None]
    plugin = [_one(check_group_plugin)] if settings.sso else []
    local_art = settings.artifacts.backend == "local"
    if not deployed(settings, target):
        return [_one(check_server), _one(check_database), *systems, *plugin,
                *([_one(check_artifact_folder)] if local_art else []), _one(check_allowed_host)]
    on_cluster = {name: _stateless(check) for name, check in connection.checks().items()}
    return [
        on_cluster[API], on_cluster[PODS], on_cluster[PVCS], on_cluster[MIGRATION_JOB],
        on_cluster[TLS],
        # Only when the config names any (kubernetes.existing_secrets).
        *([on_cluster[EXISTING_SECRETS]] if in_use(settings) else []),
        _one(check_database_deployed if settings.database.backend == "postgresql"
             else check_database_in_pod),
        *systems, *([_stateless(check_group_plugin_deployed)] if settings.sso else []),
        *([_one(check_artifacts_on_volume)] if local_art else []),
        on_cluster[ALLOWED_HOST],
    ]


def run(settings: Settings, state: StateDir,
        on_finding: Callable[[Finding], None] | None = None,
        target: Target = "auto") -> list[Finding]:
    findings = []
    for check in checks_for(settings, target):
        for finding in check(settings, state):
            findings.append(finding)
            if on_finding:
                on_finding(finding)
    return findings
