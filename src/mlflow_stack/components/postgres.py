"""PostgreSQL: the metadata databases and their owner, created if missing (SYSTEM); dropped
only by `uninstall --purge`; schema revision reads for upgrade and doctor."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from pydantic import SecretStr

from mlflow_stack.components.base import Change
from mlflow_stack.components.protocol import Finding, Step, ok, problem, run_steps
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError, ServiceUnreachable, StackError
from mlflow_stack.progress import NullProgress, Progress

SYSTEM_NAME = "postgres"
Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class PgTarget:
    host: str
    port: int
    user: str
    password: str
    sslmode: str

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def admin_target(settings: Settings) -> PgTarget:
    db = settings.database
    password = settings.secrets.effective_db_admin_password
    if db.host is None or password is None:
        raise ConfigError("database.host and a database password are required for PostgreSQL")
    return PgTarget(db.host, db.port, db.admin_user or db.user, password.get_secret_value(),
                    db.sslmode)


def connect(target: PgTarget, dbname: str = "postgres") -> Conn:
    """Connect, turning failures into errors that name host:port and what went wrong."""
    try:
        return psycopg.connect(
            host=target.host, port=target.port, user=target.user, password=target.password,
            dbname=dbname, sslmode=target.sslmode, connect_timeout=5, autocommit=True,
        )
    except psycopg.OperationalError as exc:
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if "password authentication failed" in text or "no password supplied" in text:
            raise ServiceUnreachable(
                f"PostgreSQL at {target.where} refused user {target.user!r}: wrong password",
                hint="Check ADMIN_PASSWORD / MLFLOW_STACK_DB_ADMIN_PASSWORD.",
            ) from None
        raise ServiceUnreachable(
            f"PostgreSQL at {target.where} is unreachable: {text}",
            hint="Is the server running and database.host/port right?",
        ) from None


def _role_exists(conn: Conn, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() \
        is not None


def database_exists(conn: Conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() \
        is not None


@dataclass(frozen=True)
class Observed:
    owner_exists: bool | None  # None: the owner is the admin login itself
    databases: dict[str, bool]  # name -> exists


def observe_databases(conn: Conn, settings: Settings, names: tuple[str, ...]) -> Observed:
    db = settings.database
    owner = None if db.user == conn.info.user else _role_exists(conn, db.user)
    return Observed(owner, {name: database_exists(conn, name) for name in names})


def plan_databases(conn: Conn, settings: Settings, observed: Observed) -> list[Step]:
    """The owner role, then each database, created if missing."""
    db = settings.database
    steps: list[Step] = []
    if observed.owner_exists is not None:
        if observed.owner_exists:
            steps.append(Step(Change(SYSTEM_NAME, "unchanged", f"role {db.user}")))
        else:
            password = settings.secrets.effective_db_password
            if password is None:
                raise ConfigError(f"role {db.user} does not exist and no password is set for it",
                                  hint="Set MLFLOW_STACK_DB_PASSWORD or ADMIN_PASSWORD.")

            def create_role(progress: Progress, password: SecretStr = password) -> None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(db.user), sql.Literal(password.get_secret_value())))
            steps.append(Step(Change(SYSTEM_NAME, "create", f"role {db.user}"), create_role))
    for name, exists in observed.databases.items():
        if exists:
            steps.append(Step(Change(SYSTEM_NAME, "unchanged", f"database {name}")))
            continue

        def create(progress: Progress, name: str = name) -> None:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(db.user)))
        steps.append(Step(Change(SYSTEM_NAME, "create", f"database {name}", f"owner {db.user}"),
                          create))
    return steps


def ensure_database(settings: Settings, dbname: str | None = None) -> list[Change]:
    """Create the owner role and one database if missing (restore uses it). Idempotent."""
    with connect(admin_target(settings)) as conn:
        observed = observe_databases(conn, settings, (dbname or settings.database.name,))
        return run_steps(SYSTEM_NAME, plan_databases(conn, settings, observed), NullProgress())


class PostgresSystem:
    """The metadata databases (MLflow's and the SSO layer's) and their owner role."""

    name = SYSTEM_NAME

    def where(self, settings: Settings) -> str:
        return f"{settings.database.host}:{settings.database.port}"

    def connect(self, settings: Settings) -> Conn:
        return connect(admin_target(settings))

    def observe(self, client: Conn, settings: Settings) -> Observed:
        return observe_databases(client, settings, settings.databases)

    def plan(self, client: Conn, settings: Settings, observed: Observed) -> list[Step]:
        return plan_databases(client, settings, observed)

    def teardown(self, client: Conn, settings: Settings, *, purge: bool) -> list[Step]:
        """Drop the databases with `purge` (open sessions are ended: the server that used them
        is gone by then); else keep them. The owner role stays: other databases may be its."""
        steps: list[Step] = []
        for name in settings.databases:
            if not database_exists(client, name):
                steps.append(Step(Change(SYSTEM_NAME, "unchanged", f"database {name}",
                                         "does not exist")))
            elif not purge:
                steps.append(Step(Change(SYSTEM_NAME, "unchanged", f"database {name}",
                                         "kept (--purge drops it)")))
            else:
                def drop(progress: Progress, name: str = name) -> None:
                    client.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                        sql.Identifier(name)))
                steps.append(Step(Change(SYSTEM_NAME, "delete", f"database {name}",
                                         "with every table in it"), drop, destructive=True))
        return steps

    def check(self, settings: Settings) -> list[Finding]:
        name = "PostgreSQL"
        try:
            with self.connect(settings) as conn:
                missing = [s.change.target for s in self.plan(conn, settings,
                                                                self.observe(conn, settings))
                           if s.pending]
        except StackError as exc:
            return [problem(name, exc.message, exc.hint or "check database.host/port and the "
                            "admin password")]
        if missing:
            return [problem(name, f"{', '.join(missing)} missing on {self.where(settings)}",
                            "mlflow-stack apply (or up) creates them")]
        return [ok(name, f"{self.where(settings)}: {', '.join(settings.databases)} and their "
                   "owner exist")]


SYSTEM = PostgresSystem()


def rename_database(settings: Settings, name: str, new_name: str) -> bool:
    """Rename a database (to keep it aside); False if it does not exist. PostgreSQL refuses
    while anyone is connected: that error names the database."""
    with connect(admin_target(settings)) as conn:
        if not database_exists(conn, name):
            return False
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(name), sql.Identifier(new_name)))
        except psycopg.errors.ObjectInUse:
            raise ConfigError(f"database {name} is in use: it cannot be moved aside",
                              hint="stop the server (mlflow-stack down) and every other "
                                   "client of the database first") from None
    return True


def owner_target(settings: Settings) -> PgTarget:
    """The database owner's login: what the server itself connects as."""
    db = settings.database
    password = settings.secrets.effective_db_password
    if db.host is None or password is None:
        raise ConfigError("database.host and a database password are required for PostgreSQL")
    return PgTarget(db.host, db.port, db.user, password.get_secret_value(), db.sslmode)


def alembic_revision(settings: Settings, dbname: str | None = None,
                     table: str = "alembic_version") -> str | None:
    """The schema revision stored in the database, or None for an empty database."""
    db = settings.database
    target = owner_target(settings)
    with connect(target, dbname or db.name) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if not exists or exists[0] is None:
            return None
        row = conn.execute(sql.SQL("SELECT version_num FROM {}").format(
            sql.Identifier(table))).fetchone()
        return str(row[0]) if row else None
