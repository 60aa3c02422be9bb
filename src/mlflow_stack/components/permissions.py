"""Permissions as code: the config's `permissions.grants` reconciled with mlflow-oidc-auth's
live grants (its database, which every server replica reads on each request), and, with
`server.workspaces`, the config's `workspaces` (permissions/workspaces.py): the workspaces in
MLflow's database, then their group grants in the same transaction as the other grants.

It runs after Kubernetes, whose migration Job creates the SSO schema; when the schema is not
there yet at plan time, the one step waits for it and reads the grants again when it runs.
Grants of subjects outside `permissions.scope` are never touched; uninstall keeps every grant
(they live in the SSO database, which only `--purge` drops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy

from mlflow_stack.components.base import Change
from mlflow_stack.components.protocol import Finding, Step, ok, problem
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError, ServiceUnreachable, StackError
from mlflow_stack.permissions import workspaces as ws
from mlflow_stack.permissions.auth_db import AuthDb, LiveGrants
from mlflow_stack.permissions.grants import Grant, GrantChange, desired, diff
from mlflow_stack.progress import Progress

SYSTEM_NAME = "permissions"


def open_postgres(settings: Settings) -> AuthDb:
    """Both databases on the platform's PostgreSQL, as the databases' owner (the password is
    in the URL object, never in a rendered string)."""
    db = settings.database
    password = settings.secrets.effective_db_password
    if db.host is None or password is None:
        raise ConfigError("database.host and a database password are required for "
                          "permissions.grants")

    def engine(dbname: str) -> sqlalchemy.Engine:
        url = sqlalchemy.URL.create(
            "postgresql+psycopg", username=db.user, password=password.get_secret_value(),
            host=db.host, port=db.port, database=dbname, query={"sslmode": db.sslmode})
        return sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5},
                                        pool_pre_ping=True)

    where = f"{db.host}:{db.port}/{db.auth_name}"
    client = AuthDb(engine(db.auth_name), engine(db.name), where)
    try:
        client.has_schema()
    except sqlalchemy.exc.OperationalError as exc:
        client.close()
        text = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise ServiceUnreachable(f"PostgreSQL at {where} is unreachable: {text}",
                                 hint="Is the server running and database.host/port "
                                      "right?") from None
    return client


def open_sqlite(auth_db: str, tracking_db: str) -> AuthDb:
    """The local platform's two sqlite files (`up`). MLflow's is created by the server on
    its first start; until then an empty in-memory one stands for it (no experiments)."""
    tracking = f"sqlite:///{tracking_db}" if Path(tracking_db).exists() else "sqlite://"
    return AuthDb(sqlalchemy.create_engine(f"sqlite:///{auth_db}"),
                  sqlalchemy.create_engine(tracking), auth_db)


@dataclass
class Observed:
    live: LiveGrants | None  # None: the SSO schema does not exist yet
    notes: list[str] = field(default_factory=list)
    # None: no workspaces to reconcile, or MLflow's schema does not exist yet (then `live`
    # is None too: one deferred step does everything)
    workspaces: ws.LiveWorkspaces | None = None


def observe(client: AuthDb, settings: Settings | None = None) -> Observed:
    wanted = ws.desired(settings) if settings is not None else []
    if not client.has_schema() or (wanted and not ws.has_workspace_table(client.tracking)):
        return Observed(None, ["the SSO or MLflow database has no schema yet: the grants are "
                               "applied once the server or the migration Job has created it"])
    live = client.read()
    workspaces = None
    if wanted:
        with client.session() as s:
            workspaces = ws.read(client.tracking, s, [w.name for w in wanted])
    return Observed(live, [f"left alone: {o}" for o in live.orphans], workspaces)


def workspace_changes(settings: Settings, observed: Observed) -> list[ws.WorkspaceChange]:
    if observed.workspaces is None:
        return []
    return ws.diff(ws.desired(settings), observed.workspaces)


def _write(client: AuthDb, changes: list[GrantChange], live: LiveGrants,
           workspace_changes: list[ws.WorkspaceChange]) -> None:
    """Workspaces in MLflow first (idempotent on a retry), then every grant in one SSO
    database transaction: a failure leaves the grants as they were."""
    ws.write_workspaces(client.tracking, workspace_changes)
    with client.session() as s:
        client.write_in(s, changes, live.experiments)
        ws.write_grants(s, workspace_changes)


def _waiting(grant: Grant, live: LiveGrants) -> str | None:
    """Why a declared grant cannot be written yet, or None."""
    if grant.resource == "experiment" and not grant.pattern and grant.name not in live.experiments:
        return (f"no active experiment named {grant.name!r} yet (an experiment_pattern also "
                "covers experiments created later)")
    if grant.subject_kind == "user" and grant.subject not in live.users:
        return f"{grant.subject} has not signed in yet"
    return None


def grant_changes(settings: Settings, live: LiveGrants) -> tuple[list[GrantChange], list[Change]]:
    """The writes that reconcile the live grants, and what they leave as is (for the report)."""
    wanted: list[Grant] = []
    report: list[Change] = []
    for grant in desired(settings.permissions):
        why = _waiting(grant, live)
        if why is None:
            wanted.append(grant)
        else:
            report.append(Change(SYSTEM_NAME, "unchanged", grant.describe(),
                                 f"not granted: {why}"))
    changes = diff(wanted, live.grants, settings.permissions)
    same = len(wanted) - sum(1 for c in changes if c.action != "delete")
    if same:
        report.append(Change(SYSTEM_NAME, "unchanged", f"{same} grant(s)", "as declared"))
    return changes, report


def _run_all(client: AuthDb, settings: Settings) -> None:
    observed = observe(client, settings)
    if observed.live is None:
        raise StackError(f"the SSO database {client.where} (or MLflow's) still has no schema",
                         hint="Start the server once (`up`, or the Deployment's migration "
                              "Job), then apply again.")
    changes, _ = grant_changes(settings, observed.live)
    _write(client, changes, observed.live, workspace_changes(settings, observed))


class PermissionsSystem:
    name = SYSTEM_NAME

    def where(self, settings: Settings) -> str:
        db = settings.database
        return f"{db.host}:{db.port}/{db.auth_name}"

    def connect(self, settings: Settings) -> AuthDb:
        return open_postgres(settings)

    def observe(self, client: AuthDb, settings: Settings) -> Observed:
        return observe(client, settings)

    def plan(self, client: AuthDb, settings: Settings, observed: Observed) -> list[Step]:
        if observed.live is None:
            n = len(settings.permissions.grants)
            what, when = f"{n} declared grant(s)", "once the SSO schema exists"
            if settings.server.workspaces and settings.sso:
                what += f", {len(settings.workspaces)} declared workspace(s)"
                when = "once the SSO and MLflow schemas exist"
            return [Step(Change(SYSTEM_NAME, "create", what, when),
                         run=lambda _p: _run_all(client, settings))]
        live = observed.live
        changes, report = grant_changes(settings, live)
        wchanges = workspace_changes(settings, observed)

        # All of them run by the first step: nothing half-changed.
        def run(_progress: Progress) -> None:
            _write(client, changes, live, wchanges)

        shown = ([Change(SYSTEM_NAME, c.action, c.describe(), c.detail) for c in wchanges]
                 + [Change(SYSTEM_NAME, c.action, c.grant.describe(), c.detail)
                    for c in changes])
        if observed.workspaces is not None and not wchanges:
            report.append(Change(SYSTEM_NAME, "unchanged", "workspaces", "as declared"))
        return ([Step(c, run=run if i == 0 else None) for i, c in enumerate(shown)]
                + [Step(c) for c in report])

    def teardown(self, client: AuthDb, settings: Settings, *, purge: bool) -> list[Step]:
        return [Step(Change(SYSTEM_NAME, "unchanged", "grants",
                            "kept in the SSO database (`--purge` drops it with PostgreSQL)"))]

    def check(self, settings: Settings) -> list[Finding]:
        name = "Permissions"
        try:
            client = self.connect(settings)
            try:
                steps = self.plan(client, settings, self.observe(client, settings))
            finally:
                client.close()
        except StackError as exc:
            return [problem(name, exc.message, exc.hint or "check database.host/port")]
        drift = [s.change for s in steps if s.pending]
        if drift:
            return [problem(name, f"{len(drift)} grant(s) differ from permissions.grants, e.g. "
                            f"{drift[0].target} ({drift[0].detail})",
                            "`mlflow-stack plan` shows them; `apply` puts the config's back")]
        return [ok(name, f"the live grants match permissions.grants "
                   f"({len(settings.permissions.grants)} declared)")]


SYSTEM = PermissionsSystem()


def open_local(settings: Settings, data_dir: str) -> AuthDb:
    """The client for a local platform: its PostgreSQL, else its sqlite files in `data_dir`.
    With workspaces, a new MLflow database gets its schema now (the workspaces live in it)."""
    client = (open_postgres(settings) if settings.database.backend == "postgresql"
              else open_sqlite(f"{data_dir}/auth.db", f"{data_dir}/mlflow.db"))
    if ws.desired(settings) and not ws.has_workspace_table(client.tracking):
        url = (client.tracking.url if settings.database.backend == "postgresql"
               else sqlalchemy.make_url(f"sqlite:///{data_dir}/mlflow.db"))
        client.close()
        ws.ensure_schema(url)
        return open_local(settings, data_dir)
    return client


def reconcile(client: AuthDb, settings: Settings, progress: Progress) -> list[Change]:
    """Plan and run in one go (`up`, after its migrations)."""
    from mlflow_stack.components.protocol import run_steps

    return run_steps(SYSTEM_NAME, SYSTEM.plan(client, settings, observe(client, settings)),
                     progress)
