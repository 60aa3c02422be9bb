"""Where the server keeps its data: the metadata and SSO databases' URIs, the artifact store."""

from __future__ import annotations

from mlflow_stack.config.model import Settings
from mlflow_stack.launch.spec import ServerPaths


def backend_store_uri(settings: Settings, paths: ServerPaths) -> str:
    """The metadata store URI. It never carries the password: libpq reads PGPASSWORD."""
    db = settings.database
    if db.backend == "sqlite":
        return f"sqlite:///{paths.data_dir / 'mlflow.db'}"
    return postgres_uri(settings, db.name)


def postgres_uri(settings: Settings, dbname: str) -> str:
    db = settings.database
    return f"postgresql://{db.user}@{db.host}:{db.port}/{dbname}?sslmode={db.sslmode}"


def auth_db_uri(settings: Settings, paths: ServerPaths) -> str:
    """The auth DB: same PostgreSQL server (password from PGPASSWORD), or sqlite in the data dir."""
    if settings.database.backend == "postgresql":
        return postgres_uri(settings, settings.database.auth_name)
    return f"sqlite:///{paths.data_dir / 'auth.db'}"


def artifacts_destination(settings: Settings, paths: ServerPaths) -> str:
    if settings.artifacts.backend == "s3":
        return settings.artifacts.destination
    return str(paths.artifacts_dir)
