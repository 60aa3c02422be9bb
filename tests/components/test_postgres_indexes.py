"""The search indexes in MLflow's database (components/postgres_indexes.py): the plan from a
fabricated observation, then real PostgreSQL: nothing before MLflow's schema, created once it
exists (as the database owner), nothing to do again, an invalid one built again, and `up`
creating them on a new database once its server has made the schema."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from harness.ports import free_port
from harness.postgres import PostgresServer
from mlflow_stack.components import postgres, postgres_indexes
from mlflow_stack.components.postgres_indexes import SYSTEM, Observed
from mlflow_stack.components.postgres_tuning import INDEXES
from mlflow_stack.components.protocol import run_steps
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import apply_system, plan_system
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

NAMES = [index.name for index in INDEXES]


def settings(host: str = "db", port: int = 5432, name: str = "mlflow", user: str = "mlflow",
             admin: tuple[str, str] | None = None, password: str = "pw",
             server_port: int | None = None) -> Settings:
    data: dict[str, Any] = {"database": {"backend": "postgresql", "host": host, "port": port,
                                         "user": user, "name": name, "auth_name": f"{name}_a"}}
    if admin:
        data["database"]["admin_user"] = admin[0]
    if server_port:
        data["server"] = {"port": server_port}
    s = Settings.model_validate(data)
    secrets = Secrets.none().model_copy(update={
        "db_password": SecretStr(password),
        "db_admin_password": SecretStr(admin[1]) if admin else None})
    return s.model_copy(update={"secrets": secrets})


def actions(steps: list[Any]) -> list[tuple[str, str]]:
    return [(s.change.action, s.change.target.split(" on ")[0]) for s in steps]


def test_nothing_to_do_before_mlflow_has_made_its_schema() -> None:
    (step,) = SYSTEM.plan(None, settings(), Observed(False, {}))  # type: ignore[arg-type]
    assert (step.change.action, step.change.target, step.run) == (
        "unchanged", "indexes in mlflow", None)
    assert "schema does not exist yet" in step.change.detail


def test_missing_ones_are_created_invalid_ones_built_again_present_ones_left() -> None:
    steps = SYSTEM.plan(None, settings(), Observed(True, {}))  # type: ignore[arg-type]
    assert actions(steps) == [("create", f"index {n}") for n in NAMES]
    assert all(s.run is not None and not s.destructive for s in steps)
    steps = SYSTEM.plan(None, settings(),  # type: ignore[arg-type]
                        Observed(True, {NAMES[0]: True, NAMES[1]: False}))
    assert actions(steps) == [("unchanged", f"index {NAMES[0]}"), ("update", f"index {NAMES[1]}")]
    assert steps[0].run is None and "interrupted build" in steps[1].change.detail


# --------------------------------------------------------------------------------------------
# Real PostgreSQL


def _indexes(pg: PostgresServer, db: str) -> dict[str, tuple[bool, str]]:
    """name -> (valid, owner) of the platform's indexes."""
    with psycopg.connect(pg.dsn(db)) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid, pg_get_userbyid(c.relowner) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'mlflow_stack_%'"
        ).fetchall()
    return {str(name): (bool(valid), str(owner)) for name, valid, owner in rows}


@pytest.mark.integration
def test_created_once_the_schema_exists_as_the_owner_and_idempotent(
        postgres_server: PostgresServer) -> None:
    suffix = uuid.uuid4().hex[:8]
    s = settings(postgres_server.host, postgres_server.port, f"idx_{suffix}", f"idx_{suffix}",
                 admin=(postgres_server.superuser, postgres_server.password))
    apply_system(postgres.SYSTEM, s)  # the owner role and an empty database
    assert [(c.action, c.target) for c in plan_system(SYSTEM, s)] == [
        ("unchanged", f"indexes in idx_{suffix}")]
    assert SYSTEM.check(s)[0].status == "ok"

    # MLflow's tables, made by the owner (as the server does): params and tags.
    with postgres.connect(postgres.owner_target(s), f"idx_{suffix}") as conn:
        for table in ("params", "tags"):
            conn.execute(f"CREATE TABLE {table} (key varchar(250), value varchar(8000), "
                         "run_uuid varchar(32))")
    planned = plan_system(SYSTEM, s)
    assert [c.action for c in planned] == ["create", "create"]
    assert SYSTEM.check(s)[0].status == "problem"
    done = apply_system(SYSTEM, s)
    assert [c.action for c in done] == ["create", "create"]
    assert _indexes(postgres_server, f"idx_{suffix}") == {
        n: (True, f"idx_{suffix}") for n in NAMES}
    assert [c.action for c in plan_system(SYSTEM, s)] == ["unchanged", "unchanged"]
    assert apply_system(SYSTEM, s) == plan_system(SYSTEM, s)
    assert SYSTEM.check(s)[0].status == "ok"

    # An interrupted CONCURRENTLY build leaves an invalid index that IF NOT EXISTS would keep.
    with psycopg.connect(postgres_server.dsn(f"idx_{suffix}"), autocommit=True) as conn:
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
                     "%s::regclass", (NAMES[1],))
    assert [c.action for c in plan_system(SYSTEM, s)] == ["unchanged", "update"]
    apply_system(SYSTEM, s)
    assert _indexes(postgres_server, f"idx_{suffix}")[NAMES[1]] == (True, f"idx_{suffix}")
    assert postgres_indexes.ensure_indexes(s) == plan_system(SYSTEM, s)


@pytest.mark.integration
def test_a_schema_made_later_in_the_same_apply_gets_them_in_that_apply(
        postgres_server: PostgresServer) -> None:
    """A first Kubernetes deploy: the plan is read before the migration Job makes the schema,
    which then exists when this system's turn comes; the next apply has nothing to do."""
    suffix = uuid.uuid4().hex[:8]
    s = settings(postgres_server.host, postgres_server.port, f"idl_{suffix}", f"idl_{suffix}",
                 admin=(postgres_server.superuser, postgres_server.password))
    apply_system(postgres.SYSTEM, s)
    with postgres.connect(postgres.admin_target(s)) as client:
        steps = postgres_indexes.plan(s, postgres_indexes.observe(client, s))
    assert [st.change.action for st in steps] == ["unchanged"]
    run_steps(SYSTEM.name, steps, NullProgress())  # still no schema: nothing happens
    assert _indexes(postgres_server, f"idl_{suffix}") == {}

    with postgres.connect(postgres.owner_target(s), f"idl_{suffix}") as conn:
        for table in ("params", "tags"):
            conn.execute(f"CREATE TABLE {table} (key varchar(250), value varchar(8000), "
                         "run_uuid varchar(32))")
    run_steps(SYSTEM.name, steps, NullProgress())  # the same plan, the schema there now
    assert _indexes(postgres_server, f"idl_{suffix}") == {
        n: (True, f"idl_{suffix}") for n in NAMES}
    assert [c.action for c in plan_system(SYSTEM, s)] == ["unchanged", "unchanged"]


@pytest.mark.integration
def test_up_creates_them_once_its_server_has_made_the_schema(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    name = f"idx_up_{uuid.uuid4().hex[:8]}"
    s = settings(postgres_server.host, postgres_server.port, name, postgres_server.superuser,
                 password=postgres_server.password, server_port=free_port())
    state = StateDir(tmp_path / "state")
    progress = NullProgress()
    platform.up(s, state, progress)
    try:
        assert {n: v for n, (v, _) in _indexes(postgres_server, name).items()} == {
            n: True for n in NAMES}
        assert any(d.startswith(f"index {NAMES[0]}") and d.endswith(": create")
                   for d in progress.details), progress.details
        assert [c.action for c in plan_system(SYSTEM, s)] == ["unchanged", "unchanged"]
    finally:
        platform.down(state)
