"""Workspaces as code: the config's `workspaces` against MLflow's workspaces (its database,
written through MLflow's own workspace store) and mlflow-oidc-auth's workspace group grants
(its `workspace_group_permissions` table, through its ORM model).

The `default` workspace holds everything created before workspaces were turned on (MLflow's
migration puts every existing object there). mlflow-oidc-auth lets a non-admin search a
workspace only with at least READ on it (hooks/after_request.py: `_search_scope_denied`, also
for requests without the header, which MLflow serves from `default`), so unless the config
declares `default` itself, the user role's group (`auth.user_role`) gets `auth.default_permission`
on it, raised to READ: what every user could reach before stays reachable.

Scope: only the workspaces the config declares. A declared workspace's group grants become
exactly the declared ones (the implicit `default` grant adds one and removes none); users'
grants, and workspaces the config does not name, are never touched; nothing is ever deleted in
MLflow (a workspace removed from the config stays, with its grants).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy
from sqlalchemy.orm import Session

from mlflow_stack.config.model import Settings
from mlflow_stack.config.workspaces import DEFAULT_WORKSPACE

_ORDER = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")


@dataclass(frozen=True)
class DesiredWorkspace:
    name: str
    description: str | None
    groups: dict[str, str]
    exclusive: bool  # other groups' grants on it are removed


def desired(settings: Settings) -> list[DesiredWorkspace]:
    """The declared workspaces, plus `default` with the user role's grant unless declared."""
    if not settings.server.workspaces or not settings.sso:
        return []
    out = [DesiredWorkspace(ws.name, ws.description, dict(ws.groups), True)
           for ws in settings.workspaces]
    if not any(ws.name == DEFAULT_WORKSPACE for ws in settings.workspaces):
        level = settings.auth.default_permission
        if _ORDER.index(level) < _ORDER.index("READ"):
            level = "READ"
        out.insert(0, DesiredWorkspace(DEFAULT_WORKSPACE, None,
                                       {settings.auth.user_role: level}, False))
    return out


@dataclass
class LiveWorkspaces:
    descriptions: dict[str, str | None] = field(default_factory=dict)  # MLflow's workspaces
    # (workspace, group) -> (permission, rule_id): grants on the declared workspaces
    grants: dict[tuple[str, str], tuple[str, int | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkspaceChange:
    action: Literal["create", "update", "delete"]
    kind: Literal["workspace", "grant"]
    workspace: str
    group: str | None = None
    value: str | None = None  # the permission (grant) or description (workspace)
    before: str | None = None

    def describe(self) -> str:
        if self.kind == "workspace":
            return f"workspace {self.workspace!r}"
        return f"group {self.group}: workspace {self.workspace!r}"

    @property
    def detail(self) -> str:
        if self.kind == "workspace":
            return ("created in MLflow" if self.action == "create"
                    else f"description {self.before!r} -> {self.value!r}")
        if self.action == "create":
            return str(self.value)
        if self.action == "update":
            return f"{self.before} -> {self.value} (changed outside the config)"
        return f"{self.before}: not in the config"


def diff(wanted: list[DesiredWorkspace], live: LiveWorkspaces) -> list[WorkspaceChange]:
    """Workspaces first (the grants name them), then grants in the config's order, then
    deletions."""
    out: list[WorkspaceChange] = []
    for ws in wanted:
        if ws.name not in live.descriptions:
            out.append(WorkspaceChange("create", "workspace", ws.name, value=ws.description))
        elif ws.description is not None and live.descriptions[ws.name] != ws.description:
            out.append(WorkspaceChange("update", "workspace", ws.name, value=ws.description,
                                       before=live.descriptions[ws.name]))
    for ws in wanted:
        for group, level in ws.groups.items():
            now = live.grants.get((ws.name, group))
            if now is None:
                out.append(WorkspaceChange("create", "grant", ws.name, group, level))
            elif now[0] != level:
                out.append(WorkspaceChange("update", "grant", ws.name, group, level, now[0]))
    for ws in wanted:
        if not ws.exclusive:
            continue
        for (name, group), (level, rule_id) in sorted(live.grants.items()):
            # A grant made by one of oidc-auth's workspace rules is the rule's to manage.
            if name == ws.name and group not in ws.groups and rule_id is None:
                out.append(WorkspaceChange("delete", "grant", name, group, before=level))
    return out


def has_workspace_table(tracking: sqlalchemy.Engine) -> bool:
    """False until MLflow's migrations have run (they create `workspaces` and `default`)."""
    return sqlalchemy.inspect(tracking).has_table("workspaces")


def ensure_schema(tracking_url: sqlalchemy.URL) -> None:
    """Create MLflow's schema in a new database, as the server does on its first start (`up`
    reconciles before starting it, and MLflow's schema holds the workspaces): MLflow's
    workspace store initialises the tables when it opens a database that has none."""
    engine = sqlalchemy.create_engine(tracking_url)
    try:
        if has_workspace_table(engine):
            return
        store = _store(engine)
        store._engine.dispose()  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def _store(tracking: sqlalchemy.Engine) -> object:
    """MLflow's own SQL workspace store on the tracking database (its validation, its
    `RESOURCE_ALREADY_EXISTS`); the password stays inside the URL handed to it."""
    from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore

    return SqlAlchemyStore(tracking.url.render_as_string(hide_password=False))


def read(tracking: sqlalchemy.Engine, session: Session,
         names: list[str]) -> LiveWorkspaces:
    from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore
    from mlflow_oidc_auth.db.models import SqlGroup
    from mlflow_oidc_auth.db.models.workspace import SqlWorkspaceGroupPermission

    store = _store(tracking)
    assert isinstance(store, SqlAlchemyStore)
    try:
        live = LiveWorkspaces({w.name: w.description for w in store.list_workspaces()})
    finally:
        store._engine.dispose()
    rows = (session.query(SqlWorkspaceGroupPermission, SqlGroup.group_name)
            .join(SqlGroup, SqlGroup.id == SqlWorkspaceGroupPermission.group_id)
            .filter(SqlWorkspaceGroupPermission.workspace.in_(names)))
    for row, group in rows:
        live.grants[(row.workspace, str(group))] = (str(row.permission), row.rule_id)
    return live


def write_workspaces(tracking: sqlalchemy.Engine, changes: list[WorkspaceChange]) -> None:
    """Create or describe workspaces in MLflow (before their grants are written)."""
    from mlflow.entities import Workspace
    from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore

    todo = [c for c in changes if c.kind == "workspace"]
    if not todo:
        return
    store = _store(tracking)
    assert isinstance(store, SqlAlchemyStore)
    try:
        for c in todo:
            if c.action == "create":
                store.create_workspace(Workspace(name=c.workspace, description=c.value))
            else:
                store.update_workspace(Workspace(name=c.workspace, description=c.value))
    finally:
        store._engine.dispose()


def write_grants(s: Session, changes: list[WorkspaceChange]) -> None:
    """The grant changes, in the caller's transaction. A group the SSO layer has not seen yet
    is created, as its members' first sign-in would."""
    from mlflow_oidc_auth.db.models import SqlGroup
    from mlflow_oidc_auth.db.models.workspace import SqlWorkspaceGroupPermission as M

    for c in changes:
        if c.kind != "grant":
            continue
        group_id = s.query(SqlGroup.id).filter(SqlGroup.group_name == c.group).scalar()
        if group_id is None:
            if c.action == "delete":
                continue
            group = SqlGroup(group_name=c.group)
            s.add(group)
            s.flush()
            group_id = group.id
        row = s.query(M).filter(M.workspace == c.workspace, M.group_id == group_id).first()
        if c.action == "delete":
            if row is not None:
                s.delete(row)
        elif row is None:
            s.add(M(workspace=c.workspace, group_id=group_id, permission=c.value))
        else:
            # As an administrator's edit through oidc-auth's API: the grant becomes manual.
            row.permission = str(c.value)
            row.rule_id = None
