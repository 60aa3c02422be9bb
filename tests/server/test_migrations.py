"""Schema migrations before the server starts: a database left at an older MLflow revision is
upgraded (`mlflow db upgrade`) by `up`, and the server then serves it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.ports import free_port
from mlflow_stack.config.model import Settings
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress
from mlflow_stack.server.migrations import mlflow_head_revision

pytestmark = pytest.mark.integration
OLD_REVISION = "0584bdc529eb"  # an early MLflow 2.x schema revision

# Builds the schema MLflow had at OLD_REVISION, with MLflow's own initial models and alembic.
MAKE_OLD_DB = """
import sys, sqlalchemy
from alembic import command
from mlflow.store.db.utils import _get_alembic_config
from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase
url = sys.argv[1]
engine = sqlalchemy.create_engine(url)
InitialBase.metadata.create_all(engine)
with engine.begin() as conn:
    config = _get_alembic_config(url)
    config.attributes["connection"] = conn
    command.upgrade(config, sys.argv[2])
"""


def test_up_upgrades_an_old_schema_first(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.prepare()
    db = state.data_dir / "mlflow.db"
    subprocess.run([sys.executable, "-c", MAKE_OLD_DB, f"sqlite:///{db}", OLD_REVISION],
                   check=True, capture_output=True, timeout=300)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (
            OLD_REVISION,)

    progress = NullProgress()
    settings = Settings.model_validate({"server": {"port": free_port()}})
    result = platform.up(settings, state, progress)
    try:
        assert any(f"schema upgraded from revision {OLD_REVISION}" in d
                   for d in progress.details), progress.details
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (
                mlflow_head_revision(),)
        created = httpx.post(f"{result.record.url}/api/2.0/mlflow/experiments/create",
                             json={"name": "after-upgrade"}, timeout=30)
        assert created.status_code == 200, created.text
    finally:
        platform.down(state)
