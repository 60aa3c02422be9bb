"""The workspace diff (pure): what plan shows and apply runs for `workspaces`."""

from __future__ import annotations

from typing import Any

from mlflow_stack.config.model import Settings
from mlflow_stack.permissions.workspaces import LiveWorkspaces, desired, diff


def _settings(**extra: Any) -> Settings:
    return Settings.model_validate({
        "server": {"workspaces": True},
        "auth": {"provider": "keycloak", "keycloak_url": "https://kc.example.com",
                 "default_permission": "NO_PERMISSIONS"}, **extra})


def test_default_gets_the_user_role_at_least_read_unless_declared() -> None:
    wanted = desired(_settings())
    assert [(w.name, w.groups, w.exclusive) for w in wanted] == [
        ("default", {"mlflow-user": "READ"}, False)]  # searching a workspace needs READ
    edit = _settings(auth={"provider": "keycloak", "keycloak_url": "https://kc.example.com",
                           "default_permission": "EDIT"})
    assert desired(edit)[0].groups == {"mlflow-user": "EDIT"}
    own = _settings(workspaces=[{"name": "default", "groups": {"auditors": "READ"}}])
    assert [(w.name, w.groups, w.exclusive) for w in desired(own)] == [
        ("default", {"auditors": "READ"}, True)]
    assert desired(Settings()) == []  # workspaces off: nothing


def test_diff_creates_updates_and_removes_only_in_declared_workspaces() -> None:
    settings = _settings(workspaces=[
        {"name": "team-a", "description": "A", "groups": {"team-a": "EDIT", "auditors": "READ"}},
        {"name": "team-b", "groups": {"team-b": "EDIT"}}])
    live = LiveWorkspaces(
        descriptions={"default": "Default workspace", "team-b": "old", "other": None},
        grants={("default", "mlflow-user"): ("READ", None),
                ("default", "someone"): ("EDIT", None),  # implicit default: left alone
                ("team-a", "auditors"): ("MANAGE", None),  # drift: put back
                ("team-a", "stray"): ("READ", None),  # not declared: removed
                ("team-a", "by-rule"): ("READ", 7),  # a workspace rule's: left alone
                ("team-b", "team-b"): ("EDIT", None)})
    got = [(c.action, c.kind, c.workspace, c.group, c.value, c.before)
           for c in diff(desired(settings), live)]
    assert got == [
        ("create", "workspace", "team-a", None, "A", None),
        # team-b declares no description: MLflow's is kept
        ("create", "grant", "team-a", "team-a", "EDIT", None),
        ("update", "grant", "team-a", "auditors", "READ", "MANAGE"),
        ("delete", "grant", "team-a", "stray", None, "READ"),
    ]
    live.descriptions["team-a"] = "A"
    live.grants.update({("team-a", "team-a"): ("EDIT", None),
                        ("team-a", "auditors"): ("READ", None)})
    del live.grants[("team-a", "stray")]
    assert diff(desired(settings), live) == []  # idempotent
