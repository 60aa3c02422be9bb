"""The MCP registry's route prefixes remembered per static prefix
(server/patches/mcp_prefixes.py): the same prefixes as upstream's function for every static
prefix, worked out once per value, and the registry's path test follows a changed prefix."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow_oidc_auth.middleware import mcp_server_registry as registry

from mlflow_stack.server.patches import mcp_prefixes

VARIABLE = "_MLFLOW_STATIC_PREFIX"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Upstream's function (counting its calls) with the patch applied over it."""
    original = getattr(registry.mcp_route_prefixes, "__wrapped__", registry.mcp_route_prefixes)
    calls: list[int] = []

    def upstream() -> Any:
        calls.append(1)
        return original()

    monkeypatch.setattr(registry, "mcp_route_prefixes", upstream)
    mcp_prefixes.apply(None)
    return calls


def test_the_prefixes_are_upstream_s_and_made_once_per_static_prefix(
        counted: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    original = registry.mcp_route_prefixes.__wrapped__
    monkeypatch.delenv(VARIABLE, raising=False)
    bare = registry.mcp_route_prefixes()
    assert registry.mcp_route_prefixes() == bare
    assert len(counted) == 1
    assert bare == original()  # what upstream answers
    monkeypatch.setenv(VARIABLE, "/mlflow")
    prefixed = registry.mcp_route_prefixes()
    assert prefixed != bare and any(p.startswith("/mlflow/") for p in prefixed)
    assert prefixed == original()
    assert registry.is_mcp_server_path(prefixed[0] + "/x")
    monkeypatch.delenv(VARIABLE)
    assert registry.mcp_route_prefixes() == bare
    assert len(counted) == 4  # two values, each made once; plus the two direct calls above
    assert registry.is_mcp_server_path(bare[-1] + "/x")
    assert not registry.is_mcp_server_path("/ajax-api/2.0/mlflow/metrics/get-history")


def test_applying_twice_wraps_once(counted: list[int]) -> None:
    patched = registry.mcp_route_prefixes
    mcp_prefixes.apply(None)
    assert registry.mcp_route_prefixes is patched
