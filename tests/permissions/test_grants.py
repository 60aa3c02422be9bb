"""The diff between the config's grants and the live ones: what plan shows, apply runs."""

from __future__ import annotations

from typing import Any

from mlflow_stack.config.permissions import PermissionsSettings
from mlflow_stack.permissions.grants import Grant, desired, diff


def config(*grants: dict[str, Any], scope: str = "declared") -> PermissionsSettings:
    return PermissionsSettings.model_validate({"scope": scope, "grants": list(grants)})


def live(kind: str, subject: str, resource: str, name: str, permission: str, *,
         pattern: bool = False, priority: int = 0) -> Grant:
    return Grant(kind, subject, resource, pattern, name, permission, priority)  # type: ignore[arg-type]


TEAM_A = {"group": "team-a", "experiment_pattern": "^team-a-", "permission": "EDIT"}
SHARED = {"group": "team-b", "experiment": "shared", "permission": "READ"}


def actions(cfg: PermissionsSettings, now: list[Grant]) -> list[tuple[str, str, str]]:
    return [(c.action, c.grant.describe(), c.detail) for c in diff(desired(cfg), now, cfg)]


def test_missing_grants_are_created_and_matching_ones_left() -> None:
    cfg = config(TEAM_A, SHARED)
    now = [live("group", "team-b", "experiment", "shared", "READ")]
    assert actions(cfg, now) == [
        ("create", "group team-a: experiment_pattern '^team-a-'", "EDIT (priority 0)")]
    assert diff(desired(cfg), [*now, live("group", "team-a", "experiment", "^team-a-", "EDIT",
                                          pattern=True)], cfg) == []


def test_a_level_changed_outside_the_config_is_drift_put_back() -> None:
    cfg = config(SHARED)
    now = [live("group", "team-b", "experiment", "shared", "MANAGE")]
    assert actions(cfg, now) == [("update", "group team-b: experiment 'shared'",
                                  "MANAGE -> READ (changed outside the config)")]


def test_a_pattern_priority_change_is_drift_too() -> None:
    cfg = config({**TEAM_A, "priority": 3})
    now = [live("group", "team-a", "experiment", "^team-a-", "EDIT", pattern=True, priority=1)]
    assert [c.action for c in diff(desired(cfg), now, cfg)] == ["update"]


def test_declared_scope_removes_extra_grants_of_named_subjects_only() -> None:
    cfg = config(SHARED)
    extra = live("group", "team-b", "registered_model", "churn", "EDIT")
    other = live("group", "team-c", "experiment", "shared", "MANAGE")
    owner = live("user", "alice@example.test", "experiment", "shared", "MANAGE")
    now = [live("group", "team-b", "experiment", "shared", "READ"), extra, other, owner]
    assert actions(cfg, now) == [
        ("delete", "group team-b: registered_model 'churn'", "EDIT: not in the config")]


def test_scope_all_removes_every_undeclared_grant() -> None:
    cfg = config(SHARED, scope="all")
    other = live("group", "team-c", "experiment", "shared", "MANAGE")
    owner = live("user", "alice@example.test", "experiment", "shared", "MANAGE")
    now = [live("group", "team-b", "experiment", "shared", "READ"), other, owner]
    assert sorted(c.grant.subject for c in diff(desired(cfg), now, cfg)) == [
        "alice@example.test", "team-c"]


def test_a_prompt_and_a_model_of_the_same_name_are_different_grants() -> None:
    cfg = config({"group": "g", "prompt": "summarise", "permission": "READ"})
    now = [live("group", "g", "registered_model", "summarise", "READ")]
    assert [(c.action, c.grant.resource) for c in diff(desired(cfg), now, cfg)] == [
        ("create", "prompt"), ("delete", "registered_model")]


def test_to_spec_round_trips_through_the_config() -> None:
    grants = [live("group", "g", "prompt", "^p", "USE", pattern=True, priority=4),
              live("user", "u@example.test", "registered_model", "m", "MANAGE")]
    cfg = PermissionsSettings.model_validate({"grants": [g.to_spec() for g in grants]})
    assert desired(cfg) == grants
