"""`workspaces:` in the config: MLflow's name rule, and the switch and SSO they need."""

from __future__ import annotations

import pydantic
import pytest

from mlflow_stack.config.model import Settings

SSO = {"provider": "keycloak", "keycloak_url": "https://kc.example.com"}


def test_declared_workspaces_need_the_switch_and_sso() -> None:
    spec = {"workspaces": [{"name": "team-a", "groups": {"team-a": "EDIT"}}]}
    with pytest.raises(pydantic.ValidationError, match=r"server\.workspaces is false"):
        Settings.model_validate(spec)
    with pytest.raises(pydantic.ValidationError, match="single sign-on"):
        Settings.model_validate({**spec, "server": {"workspaces": True}})
    ok = Settings.model_validate({**spec, "server": {"workspaces": True}, "auth": SSO})
    assert ok.workspaces[0].groups == {"team-a": "EDIT"}


@pytest.mark.parametrize("name", ["Team_A", "-a", "a", "team-", "x" * 64])
def test_names_follow_mlflows_rule(name: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="workspaces"):
        Settings.model_validate({"server": {"workspaces": True}, "auth": SSO,
                                 "workspaces": [{"name": name}]})


def test_levels_and_duplicates_are_refused() -> None:
    base = {"server": {"workspaces": True}, "auth": SSO}
    with pytest.raises(pydantic.ValidationError):
        Settings.model_validate({**base, "workspaces": [{"name": "ab", "groups": {"g": "ALL"}}]})
    with pytest.raises(pydantic.ValidationError, match="declared twice"):
        Settings.model_validate({**base, "workspaces": [{"name": "ab"}, {"name": "ab"}]})
