"""`permissions:` in the config: what a grant may say, and the refusals that name the grant."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mlflow_stack.config.model import Settings
from mlflow_stack.config.permissions import PermissionsSettings

SSO = {"auth": {"provider": "keycloak", "keycloak_url": "https://kc.example.test"}}


def settings(*grants: dict[str, Any], scope: str = "declared", sso: bool = True) -> Settings:
    data: dict[str, Any] = dict(SSO) if sso else {}
    return Settings.model_validate({**data, "permissions": {"scope": scope,
                                                            "grants": list(grants)}})


def refusal(*grants: dict[str, Any], **kw: Any) -> str:
    with pytest.raises(ValidationError) as info:
        settings(*grants, **kw)
    return str(info.value)


def test_a_grant_names_its_subject_resource_and_level() -> None:
    s = settings({"group": "team-a", "experiment_pattern": "^team-a-", "permission": "EDIT",
                  "priority": 2},
                 {"user": "bob@example.test", "registered_model": "churn",
                  "permission": "READ"})
    first, second = s.permissions.grants
    assert first.subject == ("group", "team-a")
    assert first.resource == ("experiment_pattern", "^team-a-")
    assert second.subject == ("user", "bob@example.test")
    assert s.permissions.managed


def test_no_grants_manage_nothing() -> None:
    assert not Settings().permissions.managed


@pytest.mark.parametrize(("grant", "needle"), [
    ({"experiment": "x", "permission": "READ"}, "exactly one of `group` or `user`"),
    ({"group": "g", "user": "u", "experiment": "x", "permission": "READ"},
     "this one has group and user"),
    ({"group": "g", "permission": "READ"}, "exactly one resource"),
    ({"group": "g", "experiment": "x", "prompt": "p", "permission": "READ"},
     "this one has experiment, prompt"),
    ({"group": "g", "experiment_pattern": "(", "permission": "READ"},
     "experiment_pattern: '(' is not a regular expression"),
    ({"group": "g", "experiment": "x", "permission": "READ", "priority": 1},
     "priority orders patterns"),
    ({"user": "u", "prompt": "p", "permission": "READ"}, "`registered_model` grant"),
    ({"group": "g", "experiment": "x", "permission": "WRITE"}, "permission"),
    ({"group": "g", "experiment": "x", "permission": "READ", "colour": "red"}, "colour"),
])
def test_bad_grants_are_refused_naming_what_is_wrong(grant: dict[str, Any], needle: str) -> None:
    assert needle in refusal(grant)


def test_the_same_grant_twice_is_refused_naming_both_lines() -> None:
    text = refusal({"group": "g", "experiment": "x", "permission": "READ"},
                   {"group": "h", "experiment": "x", "permission": "READ"},
                   {"group": "g", "experiment": "x", "permission": "EDIT"})
    assert "permissions.grants[2]" in text and "permissions.grants[0]" in text


def test_scope_all_without_grants_is_refused() -> None:
    with pytest.raises(ValidationError, match="would delete every grant"):
        PermissionsSettings(scope="all")


def test_grants_without_sso_are_refused() -> None:
    assert "need single sign-on" in refusal(
        {"group": "g", "experiment": "x", "permission": "READ"}, sso=False)
