"""One doctor run's cluster checks: one connection, the API check first; when it fails, the
others say they could not run instead of each failing (or timing out) again."""

from __future__ import annotations

from collections.abc import Callable

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes.client import Kube, connect
from mlflow_stack.ops.doctor.cluster.allowed_host import ALLOWED_HOST, check_allowed_host
from mlflow_stack.ops.doctor.cluster.api import API, check_api
from mlflow_stack.ops.doctor.cluster.common import kube_problem
from mlflow_stack.ops.doctor.cluster.existing_secrets import (
    EXISTING_SECRETS,
    check_existing_secrets,
)
from mlflow_stack.ops.doctor.cluster.migration_job import MIGRATION_JOB, check_migration_job
from mlflow_stack.ops.doctor.cluster.pods import PODS, check_pods
from mlflow_stack.ops.doctor.cluster.pvcs import PVCS, check_pvcs
from mlflow_stack.ops.doctor.cluster.tls import TLS, check_tls
from mlflow_stack.ops.doctor.findings import Finding, skipped

ClusterCheck = Callable[[Settings], Finding]

_CHECKS: list[tuple[str, Callable[[Settings, Kube], Finding]]] = [
    (PODS, check_pods), (PVCS, check_pvcs), (MIGRATION_JOB, check_migration_job),
    (TLS, check_tls), (EXISTING_SECRETS, check_existing_secrets),
    (ALLOWED_HOST, check_allowed_host),
]


class _Session:
    """One connection for one doctor run. When the API check fails, the other cluster checks
    report that they could not run instead of each failing (or timing out) again."""

    def __init__(self) -> None:
        self.kube: Kube | None = None
        self.down: str | None = None

    def api(self, settings: Settings) -> Finding:
        try:
            self.kube = connect(settings)
        except StackError as exc:
            self.down = exc.message
            return kube_problem(API, exc)
        finding = check_api(settings, self.kube)
        if finding.status != "ok":
            self.down = finding.finding
        return finding

    def bind(self, name: str, check: Callable[[Settings, Kube], Finding]) -> ClusterCheck:
        def run(settings: Settings) -> Finding:
            if self.down is not None or self.kube is None:
                return skipped(name, f"needs the Kubernetes API ({self.down or 'not checked'})")
            return check(settings, self.kube)
        return run


def checks() -> dict[str, ClusterCheck]:
    """Every cluster check by name, in order, sharing one connection; the API check first."""
    session = _Session()
    return {API: session.api, **{name: session.bind(name, fn) for name, fn in _CHECKS}}
