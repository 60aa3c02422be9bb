"""The live grants, read and written in mlflow-oidc-auth's database through its own table
models (the ones its server uses), and experiment names from MLflow's database.

Only grants that apply everywhere are in scope: patterns for every workspace ("*") and exact
names in the default workspace (what the SSO layer writes with workspaces off). Gateway,
scorer and workspace grants are never read or written here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mlflow_stack.permissions.grants import Grant, GrantChange, Resource, SubjectKind

DEFAULT_WORKSPACE = "default"
EVERY_WORKSPACE = "*"


@dataclass(frozen=True)
class _Table:
    """Where one kind of grant lives: mlflow-oidc-auth has a table per subject kind, resource
    and exact/pattern, and marks prompts with a flag in the registered-model tables."""

    subject_kind: SubjectKind
    resource: Resource
    pattern: bool
    model: Any  # the mlflow-oidc-auth ORM class
    prompt: bool | None  # the `prompt` column's value, None: the table has none

    @property
    def subject_column(self) -> str:
        return "user_id" if self.subject_kind == "user" else "group_id"

    @property
    def name_column(self) -> str:
        if self.pattern:
            return "regex"
        return "experiment_id" if self.resource == "experiment" else "name"

    @property
    def workspace(self) -> str | None:
        if self.pattern:
            return EVERY_WORKSPACE
        return None if self.resource == "experiment" else DEFAULT_WORKSPACE

    def scope(self, query: Any) -> Any:
        """Only the rows this module manages (see the module docstring)."""
        m = self.model
        if self.prompt is not None:
            query = query.filter(m.prompt.is_(self.prompt))
        if self.workspace == EVERY_WORKSPACE:
            query = query.filter(m.workspace == EVERY_WORKSPACE)
        elif self.workspace == DEFAULT_WORKSPACE:
            # NULL: a grant from before the column, read as the default workspace's.
            query = query.filter(sqlalchemy.or_(m.workspace == DEFAULT_WORKSPACE,
                                                m.workspace.is_(None)))
        return query


def _tables() -> list[_Table]:
    from mlflow_oidc_auth.db import models as m

    return [
        _Table("user", "experiment", False, m.SqlExperimentPermission, None),
        _Table("group", "experiment", False, m.SqlExperimentGroupPermission, None),
        _Table("user", "experiment", True, m.SqlExperimentRegexPermission, None),
        _Table("group", "experiment", True, m.SqlExperimentGroupRegexPermission, None),
        # A user's exact grant on a prompt is a registered-model grant (no prompt column).
        _Table("user", "registered_model", False, m.SqlRegisteredModelPermission, None),
        _Table("group", "registered_model", False, m.SqlRegisteredModelGroupPermission, False),
        _Table("group", "prompt", False, m.SqlRegisteredModelGroupPermission, True),
        _Table("user", "registered_model", True, m.SqlRegisteredModelRegexPermission, False),
        _Table("user", "prompt", True, m.SqlRegisteredModelRegexPermission, True),
        _Table("group", "registered_model", True, m.SqlRegisteredModelGroupRegexPermission,
               False),
        _Table("group", "prompt", True, m.SqlRegisteredModelGroupRegexPermission, True),
    ]


def _table_for(grant: Grant) -> _Table:
    for table in _tables():
        if (table.subject_kind, table.resource, table.pattern) == (
                grant.subject_kind, grant.resource, grant.pattern):
            return table
    raise ValueError(f"no table holds {grant.describe()}")


@dataclass
class LiveGrants:
    """What the databases hold: the grants in scope, and what a desired grant needs."""

    grants: list[Grant] = field(default_factory=list)
    experiments: dict[str, str] = field(default_factory=dict)  # active experiments: name -> id
    users: set[str] = field(default_factory=set)
    # Exact experiment grants whose experiment is deleted or gone: left alone, reported.
    orphans: list[str] = field(default_factory=list)


@dataclass
class AuthDb:
    """The SSO layer's database and MLflow's, as SQLAlchemy engines (closed by `close`)."""

    auth: Engine
    tracking: Engine
    where: str

    def close(self) -> None:
        self.auth.dispose()
        self.tracking.dispose()

    def has_schema(self) -> bool:
        """False until the server or the migration Job has created the SSO tables (or, on a
        first `apply`, until PostgreSQL's step has created the database itself)."""
        try:
            return sqlalchemy.inspect(self.auth).has_table("groups")
        except sqlalchemy.exc.OperationalError as exc:
            if "does not exist" in str(exc.orig):
                return False
            raise

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.auth) as session, session.begin():
            yield session

    def experiments(self) -> dict[str, str]:
        """Active experiments by name; none before the server has created its tables."""
        if not sqlalchemy.inspect(self.tracking).has_table("experiments"):
            return {}
        with self.tracking.connect() as conn:
            rows = conn.execute(sqlalchemy.text(
                "SELECT name, experiment_id FROM experiments "
                "WHERE lifecycle_stage = 'active'")).all()
        return {str(name): str(eid) for name, eid in rows}

    def read(self) -> LiveGrants:
        from mlflow_oidc_auth.db.models import SqlGroup, SqlUser

        live = LiveGrants(experiments=self.experiments())
        names_by_id = {eid: name for name, eid in live.experiments.items()}
        with self.session() as s:
            users = {u.id: u.username for u in s.query(SqlUser)}
            groups = {g.id: g.group_name for g in s.query(SqlGroup)}
            live.users = set(users.values())
            for table in _tables():
                subjects = users if table.subject_kind == "user" else groups
                for row in table.scope(s.query(table.model)):
                    subject = subjects.get(getattr(row, table.subject_column))
                    name = str(getattr(row, table.name_column))
                    if subject is None:
                        continue
                    if table.resource == "experiment" and not table.pattern:
                        if name not in names_by_id:
                            live.orphans.append(f"{table.subject_kind} {subject}: experiment "
                                                f"id {name} (deleted or gone)")
                            continue
                        name = names_by_id[name]
                    live.grants.append(Grant(
                        table.subject_kind, subject, table.resource, table.pattern, name,
                        str(row.permission), int(row.priority) if table.pattern else 0))
        return live

    def write(self, changes: list[GrantChange], experiments: dict[str, str]) -> None:
        """All the changes in one transaction: a failure leaves the grants as they were."""
        with self.session() as s:
            self.write_in(s, changes, experiments)

    def write_in(self, s: Session, changes: list[GrantChange],
                 experiments: dict[str, str]) -> None:
        """The changes in the caller's transaction (with workspace grants, see
        components/permissions.py)."""
        for change in changes:
            _write_one(s, change, experiments)


def _write_one(s: Session, change: GrantChange, experiments: dict[str, str]) -> None:
    """One change. A group the SSO layer has not seen yet is created (as its members' first
    sign-in would); a user must have signed in (the caller checks)."""
    from mlflow_oidc_auth.db.models import SqlGroup, SqlUser

    grant = change.grant
    table = _table_for(grant)
    stored_name = (experiments[grant.name] if grant.resource == "experiment"
                   and not grant.pattern else grant.name)
    if grant.subject_kind == "user":
        subject_id = s.query(SqlUser.id).filter(SqlUser.username == grant.subject).scalar()
        if subject_id is None:
            raise LookupError(f"user {grant.subject} has never signed in")
    else:
        subject_id = s.query(SqlGroup.id).filter(SqlGroup.group_name == grant.subject).scalar()
        if subject_id is None:
            group = SqlGroup(group_name=grant.subject)
            s.add(group)
            s.flush()
            subject_id = group.id
    m = table.model
    row = table.scope(s.query(m)).filter(
        getattr(m, table.subject_column) == subject_id,
        getattr(m, table.name_column) == stored_name).first()
    if change.action == "delete":
        if row is not None:
            s.delete(row)
        return
    values: dict[str, object] = {"permission": grant.permission}
    if table.pattern:
        values["priority"] = grant.priority
    if row is None:
        values.update({table.subject_column: subject_id, table.name_column: stored_name})
        if table.prompt is not None:
            values["prompt"] = table.prompt
        if table.workspace is not None:
            values["workspace"] = table.workspace
        s.add(m(**values))
    else:
        for key, value in values.items():
            setattr(row, key, value)
