"""What every doctor check returns (a Finding: ok, a problem with its fix, or skipped), and the
Host matching the local and the cluster allowed-host checks share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "problem", "skipped"]


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
