"""The bounded key-set refresh: a forced refresh at most once per interval and key source."""

from __future__ import annotations

from mlflow_stack.server.patches.jwks_refresh import RefreshLimiter


def test_refresh_limiter() -> None:
    now = [0.0]
    limiter = RefreshLimiter(60, clock=lambda: now[0])
    limiter.note_fetch("k")
    assert not limiter.allow_forced("k")
    now[0] = 61
    assert limiter.allow_forced("k")
    assert not limiter.allow_forced("k")
