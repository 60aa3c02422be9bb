"""The MLflow schema revision the metadata database is at (sqlite file or PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlflow_stack.config.model import Settings


def current_revision(settings: Settings, data_dir: Path) -> str | None:
    """Revision stored in the metadata database; None if it is new or empty."""
    if settings.database.backend == "sqlite":
        db_file = data_dir / "mlflow.db"
        if not db_file.exists():
            return None
        with sqlite3.connect(db_file) as conn:
            try:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.OperationalError:
                return None
        return str(row[0]) if row else None
    from mlflow_stack.components import postgres  # psycopg only when used

    return postgres.alembic_revision(settings)
