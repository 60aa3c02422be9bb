"""Indexes MLflow's schema lacks (components/postgres_tuning.py), in MLflow's PostgreSQL
database once its schema exists (SYSTEM).

A system of its own because it needs MLflow's schema, which a new database gets only from
MLflow (the server's first start, or the Kubernetes migration Job): `plan` shows the missing
indexes as changes once the tables exist, and a note before that; `up` calls
``ensure_indexes`` once its server has made the schema, `upgrade` after its migrations. So a
first Kubernetes deploy gets them from the next apply or upgrade (its plan was read before the
migration Job ran).
Each index is built ``CONCURRENTLY`` (a large live ``params`` table keeps taking writes while
it builds) and ``IF NOT EXISTS``; an index left invalid by an interrupted build is dropped and
built again. It is created as the database owner, who owns MLflow's tables (the admin login
when no owner password is known). Uninstall leaves them: they go with the database
(``--purge``).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from mlflow_stack.components.base import Change
from mlflow_stack.components.postgres import (
    Conn,
    PgTarget,
    admin_target,
    connect,
    database_exists,
    owner_target,
)
from mlflow_stack.components.postgres_tuning import INDEXES, TuningIndex
from mlflow_stack.components.protocol import Finding, Step, ok, problem, run_steps
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.progress import NullProgress, Progress

SYSTEM_NAME = "indexes"
# MLflow's tables the indexes are on: their existence is "MLflow's schema exists".
TABLES = tuple(sorted({index.table for index in INDEXES}))
NO_SCHEMA = ("MLflow's schema does not exist yet: built once it does (later in this apply when "
             "the migration Job makes it, else by `up` or a later apply or upgrade)")


@dataclass(frozen=True)
class Observed:
    schema: bool  # MLflow's database exists and has the tables
    valid: dict[str, bool]  # index name -> valid (absent: not there)


def _writer(settings: Settings) -> PgTarget:
    """Who creates them: the owner of MLflow's tables, else the admin login."""
    if settings.secrets.effective_db_password is not None and settings.database.host:
        return owner_target(settings)
    return admin_target(settings)


def read(conn: Conn) -> Observed:
    """What a connection to MLflow's database sees."""
    found = conn.execute("SELECT count(*) FROM unnest(%s::text[]) AS t(name) "
                         "WHERE to_regclass(name) IS NOT NULL", (list(TABLES),)).fetchone()
    schema = found is not None and found[0] == len(TABLES)
    rows = conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = ANY(%s) AND pg_table_is_visible(c.oid)",
        ([index.name for index in INDEXES],)).fetchall()
    return Observed(schema, {str(name): bool(valid) for name, valid in rows})


def observe(client: Conn, settings: Settings) -> Observed:
    name = settings.database.name
    if not database_exists(client, name):
        return Observed(False, {})
    with connect(admin_target(settings), name) as conn:
        return read(conn)


def build(settings: Settings, index: TuningIndex, *, rebuild: bool) -> None:
    """Build one index in MLflow's database (its schema exists: the plan saw it)."""
    with connect(_writer(settings), settings.database.name) as conn:
        if rebuild:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                sql.Identifier(index.name)))
        conn.execute(sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(index.name), sql.Identifier(index.table),
            sql.SQL(", ").join(sql.Identifier(column) for column in index.columns)))


def plan(settings: Settings, observed: Observed) -> list[Step]:
    if not observed.schema:
        # On a first Kubernetes deploy the migration Job creates the schema during this very
        # apply (this system runs after the Kubernetes one): build them then, so that the next
        # apply has nothing left to do. Without a schema by then, nothing happens.
        def settle(progress: Progress) -> None:
            ensure_indexes(settings, progress)
        return [Step(Change(SYSTEM_NAME, "unchanged", f"indexes in {settings.database.name}",
                            NO_SCHEMA), settle=settle)]
    steps: list[Step] = []
    for index in INDEXES:
        target = f"index {index.name} on {index.table} ({', '.join(index.columns)})"
        valid = observed.valid.get(index.name)
        if valid:
            steps.append(Step(Change(SYSTEM_NAME, "unchanged", target)))
            continue
        if valid is None:
            change = Change(SYSTEM_NAME, "create", target, index.why)
        else:
            change = Change(SYSTEM_NAME, "update", target,
                            "left invalid by an interrupted build: built again")

        def run(progress: Progress, index: TuningIndex = index,
                rebuild: bool = valid is False) -> None:
            build(settings, index, rebuild=rebuild)
        steps.append(Step(change, run))
    return steps


def ensure_indexes(settings: Settings, progress: Progress | None = None) -> list[Change]:
    """Create what is missing, if MLflow's schema exists (`up`, `upgrade`). Idempotent."""
    with connect(admin_target(settings)) as client:
        observed = observe(client, settings)
    if not observed.schema:
        return []
    return run_steps(SYSTEM_NAME, plan(settings, observed), progress or NullProgress())


class IndexesSystem:
    """The tuning indexes in MLflow's database."""

    name = SYSTEM_NAME

    def where(self, settings: Settings) -> str:
        db = settings.database
        return f"{db.host}:{db.port}/{db.name}"

    def connect(self, settings: Settings) -> Conn:
        return connect(admin_target(settings))

    def observe(self, client: Conn, settings: Settings) -> Observed:
        return observe(client, settings)

    def plan(self, client: Conn, settings: Settings, observed: Observed) -> list[Step]:
        return plan(settings, observed)

    def teardown(self, client: Conn, settings: Settings, *, purge: bool) -> list[Step]:
        return [Step(Change(SYSTEM_NAME, "unchanged", f"indexes in {settings.database.name}",
                            "they go with the database (`--purge` drops it)"))]

    def check(self, settings: Settings) -> list[Finding]:
        name = "Indexes"
        try:
            with self.connect(settings) as conn:
                observed = self.observe(conn, settings)
        except StackError as exc:
            return [problem(name, exc.message, exc.hint or "check database.host/port")]
        if not observed.schema:
            return [ok(name, f"{settings.database.name} has no MLflow schema yet: they come "
                       "with it (`up`, apply or upgrade)")]
        missing = [s.change.target for s in plan(settings, observed) if s.pending]
        if missing:
            return [problem(name, f"{', '.join(missing)} missing or invalid on "
                            f"{self.where(settings)}", "mlflow-stack apply (or up) creates them")]
        return [ok(name, f"{len(INDEXES)} index(es) for searches in {self.where(settings)}")]


SYSTEM = IndexesSystem()
