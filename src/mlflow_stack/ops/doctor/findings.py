"""What every doctor check returns (a Finding: ok, a problem with its fix, or skipped; the same
record the systems' own checks return, components.protocol), and the Host matching the local
and the cluster allowed-host checks share."""

from __future__ import annotations

from mlflow_stack.components.protocol import Finding, Status, ok, problem, skipped

__all__ = ["Finding", "Status", "host_allowed", "ok", "problem", "skipped"]


def host_allowed(host: str, allowed: str) -> bool:
    """Whether MLflow's host check lets `host` through `allowed` (the comma-separated
    MLFLOW_SERVER_ALLOWED_HOSTS value), by MLflow's own matching."""
    from mlflow.server.security_utils import is_allowed_host_header

    patterns = [p.strip() for p in allowed.split(",") if p.strip()]
    return bool(is_allowed_host_header(patterns, host))
