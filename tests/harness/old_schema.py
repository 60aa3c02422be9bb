"""A metadata database at an old MLflow schema revision, built with MLflow's own models and
alembic chain (what an earlier MLflow left behind)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OLD_REVISION = "0584bdc529eb"  # an early MLflow 2.x schema revision

_MAKE_OLD_DB = """
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


def make_old_db(db_file: Path, revision: str = OLD_REVISION) -> None:
    """A SQLite database at `revision` (in a child process: alembic and mlflow are heavy)."""
    subprocess.run([sys.executable, "-c", _MAKE_OLD_DB, f"sqlite:///{db_file}", revision],
                   check=True, capture_output=True, timeout=300)
