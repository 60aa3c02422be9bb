"""The step runner every system's apply and uninstall go through, and the registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mlflow_stack.components.base import Change
from mlflow_stack.components.protocol import Step, refuse_blocked, run_steps
from mlflow_stack.components.registry import SYSTEMS
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.progress import NullProgress, Progress


def test_blocked_step_refuses_before_any_step_runs() -> None:
    ran: list[str] = []
    steps = [Step(Change("x", "create", "first"), lambda p: ran.append("first")),
             Step(Change("x", "create", "Secret s", "needs KEY"), blocked="set KEY")]
    with pytest.raises(ConfigError, match=r"cannot create Secret s \(needs KEY\)") as exc:
        run_steps("x", steps, NullProgress())
    assert exc.value.hint == "set KEY"
    assert ran == []
    refuse_blocked(steps[:1])  # nothing blocked: no error


def test_steps_run_in_order_and_settle_runs_even_when_unchanged() -> None:
    ran: list[str] = []

    def record(what: str) -> Callable[[Progress], None]:
        return lambda progress: ran.append(what)

    steps = [Step(Change("x", "unchanged", "a")),
             Step(Change("x", "unchanged", "job"), settle=record("wait job")),
             Step(Change("x", "update", "deploy"), record("write deploy"),
                  settle=record("wait rollout"))]
    progress = NullProgress()
    changes = run_steps("x", steps, progress)
    assert ran == ["wait job", "write deploy", "wait rollout"]
    assert progress.steps == ["x: update deploy"]  # only steps with work are progress steps
    assert [c.target for c in changes] == ["a", "job", "deploy"]


def test_a_failing_step_stops_the_run() -> None:
    ran: list[str] = []

    def fail(progress: Progress) -> None:
        raise RuntimeError("boom")

    steps = [Step(Change("x", "create", "a"), fail),
             Step(Change("x", "create", "b"), lambda p: ran.append("b"))]
    with pytest.raises(RuntimeError):
        run_steps("x", steps, NullProgress())
    assert ran == []


def test_registry_order_and_every_system_implements_the_protocol() -> None:
    assert [e.name for e in SYSTEMS] == ["keycloak", "postgres", "bucket", "kubernetes",
                                            "indexes", "permissions"]
    for entry in SYSTEMS:
        system = entry.system
        assert system.name == entry.name
        for method in ("where", "connect", "observe", "plan", "teardown", "check"):
            assert callable(getattr(system, method)), f"{entry.name}.{method}"


def test_skip_reasons_follow_the_config() -> None:
    default = Settings()
    skipped = {e.name: e.skip_reason(default) for e in SYSTEMS}
    assert all(reason for reason in skipped.values()), skipped  # embedded defaults: none
    pg = Settings.model_validate({"database": {"backend": "postgresql", "host": "db"}})
    assert [e.name for e in SYSTEMS if e.skip_reason(pg) is None] == ["postgres", "indexes"]
    assert [e.name for e in SYSTEMS if e.local] == ["postgres", "bucket"]
    grants = {"grants": [{"group": "g", "experiment": "x", "permission": "READ"}]}
    sso_pg = Settings.model_validate({
        "database": {"backend": "postgresql", "host": "db"}, "permissions": grants,
        "auth": {"provider": "keycloak", "keycloak_url": "https://kc.example.test"}})
    assert "permissions" in [e.name for e in SYSTEMS if e.skip_reason(sso_pg) is None]
    sso_sqlite = sso_pg.model_copy(update={"database": Settings().database})
    assert "permissions" not in [e.name for e in SYSTEMS if e.skip_reason(sso_sqlite) is None]
