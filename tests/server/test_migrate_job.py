"""The migration Job's program: creates or upgrades MLflow's schema and the SSO layer's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlflow_stack.launch.migrations import mlflow_head_revision
from mlflow_stack.server import migrate_job


def _revision(db: Path, table: str = "alembic_version") -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute(f"SELECT version_num FROM {table}").fetchone()[0])


def test_empty_database_is_created_then_left_alone(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OIDC_USERS_DB_URI", raising=False)
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert migrate_job.main(["--backend-store-uri", uri]) == 0
    assert "created" in capsys.readouterr().out
    assert _revision(db) == mlflow_head_revision()
    assert migrate_job.main(["--backend-store-uri", uri]) == 0
    assert "current" in capsys.readouterr().out


def test_sso_database_is_migrated_with_its_own_version_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = tmp_path / "auth.db"
    monkeypatch.setenv("OIDC_USERS_DB_URI", f"sqlite:///{auth}")
    monkeypatch.setenv("OIDC_ALEMBIC_VERSION_TABLE", "alembic_version_oidc_auth")
    assert migrate_job.main(["--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 0
    with sqlite3.connect(auth) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "users" in tables


def test_failure_names_the_database_and_hides_the_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OIDC_USERS_DB_URI", raising=False)
    uri = "postgresql://admin:hunter2-secret@127.0.0.1:1/mlflow?connect_timeout=1"
    # MLflow retries a refused connection for ~100 s (right for a Job); once is enough here.
    monkeypatch.setattr("mlflow.store.db.utils.MAX_RETRY_COUNT", 1)
    assert migrate_job.main(["--backend-store-uri", uri]) == 1
    err = capsys.readouterr().err
    assert "migration failed" in err and "127.0.0.1" in err
    assert "hunter2-secret" not in err
