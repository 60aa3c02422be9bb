"""PostgreSQL: the metadata database and its owner, created if missing; schema revision checks."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from mlflow_stack.components.base import Change
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError, ServiceUnreachable


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


def connect(target: PgTarget, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
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


def _role_exists(conn: psycopg.Connection[tuple[object, ...]], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() \
        is not None


def database_exists(conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() \
        is not None


def plan_database(settings: Settings, dbname: str | None = None) -> list[Change]:
    """What ensure_database would do, read only (it connects, so credentials are checked)."""
    db = settings.database
    name = dbname or db.name
    target = admin_target(settings)
    changes: list[Change] = []
    with connect(target) as conn:
        if db.user != target.user:
            changes.append(Change("postgres", "unchanged" if _role_exists(conn, db.user)
                                  else "create", f"role {db.user}"))
        if database_exists(conn, name):
            changes.append(Change("postgres", "unchanged", f"database {name}"))
        else:
            changes.append(Change("postgres", "create", f"database {name}", f"owner {db.user}"))
    return changes


def ensure_database(settings: Settings, dbname: str | None = None) -> list[Change]:
    """Create the owner role and the database if missing. Idempotent."""
    db = settings.database
    name = dbname or db.name
    target = admin_target(settings)
    changes: list[Change] = []
    owner_password = settings.secrets.effective_db_password
    with connect(target) as conn:
        if db.user != target.user:
            if _role_exists(conn, db.user):
                changes.append(Change("postgres", "unchanged", f"role {db.user}"))
            else:
                assert owner_password is not None
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(db.user), sql.Literal(owner_password.get_secret_value())))
                changes.append(Change("postgres", "create", f"role {db.user}"))
        if database_exists(conn, name):
            changes.append(Change("postgres", "unchanged", f"database {name}"))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(db.user)))
            changes.append(Change("postgres", "create", f"database {name}", f"owner {db.user}"))
    return changes


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
