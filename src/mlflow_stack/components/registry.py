"""Every external system, one line each, in the order apply runs them.

`plan`, `apply`, `uninstall` (reverse order), `up` (the lines marked local) and `doctor` all
walk this list. A system's module is imported when the system is used, so python-keycloak,
psycopg, boto3 and lightkube load only for a config that needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from mlflow_stack.components.protocol import System
from mlflow_stack.config.model import Settings


@dataclass(frozen=True)
class Entry:
    name: str
    module: str  # holds SYSTEM, the System implementation
    skip_reason: Callable[[Settings], str | None]  # None: this config uses the system
    local: bool  # `up` provisions it for the local platform too

    @property
    def system(self) -> System:
        system: System = importlib.import_module(self.module).SYSTEM
        return system


def _unless(condition: Callable[[Settings], bool], reason: str) -> Callable[[Settings], str | None]:
    return lambda settings: None if condition(settings) else reason


def names_cluster(settings: Settings) -> bool:
    return bool(settings.kubernetes.kubeconfig or settings.kubernetes.context)


SYSTEMS: tuple[Entry, ...] = (
    Entry("keycloak", "mlflow_stack.components.keycloak",
          _unless(lambda s: s.sso, "auth.provider is not keycloak"), local=False),
    Entry("postgres", "mlflow_stack.components.postgres",
          _unless(lambda s: s.database.backend == "postgresql",
                  "database.backend is not postgresql"), local=True),
    Entry("bucket", "mlflow_stack.components.bucket",
          _unless(lambda s: s.artifacts.backend == "s3", "artifacts.backend is not s3"),
          local=True),
    Entry("kubernetes", "mlflow_stack.components.kubernetes",
          _unless(names_cluster, "the config names no cluster (kubernetes.kubeconfig or "
                  "kubernetes.context); --target kubernetes uses the default kubeconfig"),
          local=False),
    # After Kubernetes: its migration Job creates MLflow's schema of a new database. `up`
    # creates them once its server has made the schema (local/platform.py).
    Entry("indexes", "mlflow_stack.components.postgres_indexes",
          _unless(lambda s: s.database.backend == "postgresql",
                  "database.backend is not postgresql"), local=False),
    # After Kubernetes: its migration Job creates the SSO schema the grants live in. The local
    # platform's sqlite grants are applied by `up` (local/platform.py).
    Entry("permissions", "mlflow_stack.components.permissions",
          _unless(lambda s: s.sso and (s.permissions.managed or s.server.workspaces)
                  and s.database.backend == "postgresql",
                  "no permissions.grants nor server.workspaces (or no SSO on PostgreSQL: "
                  "`up` applies a local platform's)"), local=False),
)
