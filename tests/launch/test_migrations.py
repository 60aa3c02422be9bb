"""Schema migrations before the server starts: a database left at an older MLflow revision is
upgraded (`mlflow db upgrade`) by `up`, and the server then serves it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from harness.old_schema import OLD_REVISION, make_old_db
from harness.ports import free_port
from mlflow_stack.config.model import Settings
from mlflow_stack.launch.migrations import mlflow_head_revision
from mlflow_stack.local import backup as backups
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

pytestmark = pytest.mark.integration


def test_up_upgrades_an_old_schema_first(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.prepare()
    db = state.data_dir / "mlflow.db"
    make_old_db(db)
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
        # The old schema was backed up before it was migrated.
        (backup,) = (state.root / "backups").iterdir()
        assert backups.verify_backup(backup).schema_revision == OLD_REVISION
        created = httpx.post(f"{result.record.url}/api/2.0/mlflow/experiments/create",
                             json={"name": "after-upgrade"}, timeout=30)
        assert created.status_code == 200, created.text
    finally:
        platform.down(state)
