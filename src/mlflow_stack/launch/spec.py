"""What a server launch is made of: argv, env entries (plain or secret), the paths it uses.

The Kubernetes Secret names the env refers to live here too: the local target resolves the
values, the Kubernetes target turns them into Secret references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from pydantic import SecretStr

# Kubernetes Secret names and keys the env refers to (compatibility names from the reference).
DB_SECRET = "mlflow-db-secret"
S3_SECRET = "mlflow-s3-secret"
OIDC_SECRET = "oauth2-proxy-secret"
# The SSO layer's session key (key SECRET_KEY): generated once, kept in this Secret and
# reused by every replica and every deploy, so sessions survive restarts and rollouts.
SECRET_KEY_SECRET = "mlflow-secret-key"


@dataclass(frozen=True)
class SecretRef:
    """A secret value and where it lives on Kubernetes (Secret name and key)."""

    secret_name: str
    key: str
    value: SecretStr | None

    def __repr__(self) -> str:  # never show the value
        return f"SecretRef({self.secret_name}/{self.key})"


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    secret: SecretRef | None = None


@dataclass(frozen=True)
class ServerPaths:
    """Where the server keeps files: state dir locally, mounted volumes in the pod."""

    data_dir: PurePosixPath  # sqlite database (local only)
    artifacts_dir: PurePosixPath  # local artifact store when not using S3
    prometheus_dir: PurePosixPath
    tmp_dir: PurePosixPath
    audit_log: str  # the audit trail's file, or "-" for stdout (server/audit.py)
    # The CA bundle as the server sees it (a mounted ConfigMap in the pod); None: the
    # configured artifacts.ca_bundle / auth.ca_bundle files, where they are.
    ca_bundle: PurePosixPath | None = None


@dataclass(frozen=True)
class ServerLaunch:
    argv: list[str]
    env: list[EnvVar] = field(default_factory=list)

    def env_dict(self) -> dict[str, str]:
        """Plain values for a local process (secrets resolved); unset secrets are left out."""
        result: dict[str, str] = {}
        for var in self.env:
            if var.secret is not None:
                if var.secret.value is not None:
                    result[var.name] = var.secret.value.get_secret_value()
            elif var.value is not None:
                result[var.name] = var.value
        return result

    def secret_names(self) -> set[str]:
        return {v.name for v in self.env if v.secret is not None}
