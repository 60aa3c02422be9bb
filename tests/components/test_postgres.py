"""PostgreSQL's plan from a fabricated observation (no server: the real-server paths are
covered by the deploy, local and backup tests)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from mlflow_stack.components.postgres import SYSTEM, Observed
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.errors import ConfigError
from mlflow_stack.progress import NullProgress


class Recorder:
    """Stands in for the connection inside `run`: records the SQL it is given."""

    def __init__(self) -> None:
        self.statements: list[Any] = []

    def execute(self, statement: Any) -> None:
        self.statements.append(statement)


def settings(sso: bool = True, password: str | None = "pw") -> Settings:
    data: dict[str, Any] = {"database": {"backend": "postgresql", "host": "db", "user": "mlflow",
                                         "name": "mlflow", "auth_name": "mlflow_auth"}}
    if sso:
        data["auth"] = {"provider": "keycloak", "keycloak_url": "https://kc.example"}
    s = Settings.model_validate(data)
    secrets = Secrets.none().model_copy(
        update={"db_password": SecretStr(password) if password else None})
    return s.model_copy(update={"secrets": secrets})


def test_databases_in_use_follow_sso() -> None:
    assert settings(sso=True).databases == ("mlflow", "mlflow_auth")
    assert settings(sso=False).databases == ("mlflow",)


def test_plan_creates_what_is_missing_in_order() -> None:
    conn = Recorder()
    observed = Observed(owner_exists=False, databases={"mlflow": True, "mlflow_auth": False})
    steps = SYSTEM.plan(conn, settings(), observed)  # type: ignore[arg-type]
    assert [(s.change.action, s.change.target) for s in steps] == [
        ("create", "role mlflow"), ("unchanged", "database mlflow"),
        ("create", "database mlflow_auth")]
    assert [s.run is None for s in steps] == [False, True, False]
    assert not any(s.destructive for s in steps)
    assert conn.statements == []  # planning runs nothing
    for step in steps:
        if step.run is not None:
            step.run(NullProgress())
    assert len(conn.statements) == 2


def test_owner_is_the_admin_login_no_role_step() -> None:
    observed = Observed(owner_exists=None, databases={"mlflow": True})
    steps = SYSTEM.plan(Recorder(), settings(sso=False), observed)  # type: ignore[arg-type]
    assert [s.change.target for s in steps] == ["database mlflow"]


def test_missing_owner_without_password_is_a_config_error() -> None:
    observed = Observed(owner_exists=False, databases={"mlflow": True})
    with pytest.raises(ConfigError, match="role mlflow"):
        SYSTEM.plan(Recorder(), settings(password=None), observed)  # type: ignore[arg-type]
