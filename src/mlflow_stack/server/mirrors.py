"""What the fast read paths share: source pins of the MLflow functions they mirror, and MLflow's
JSON for a proto double.

A fast path answers a call from rows instead of MLflow's ORM entities and protobufs, so it
mirrors MLflow's code. Each pins the SHA-256 of every function it mirrors; another MLflow (a
different digest) leaves MLflow's own view answering, with a warning, until a test has compared
both views again and the digests are renewed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import math
from collections.abc import Iterator, Mapping
from typing import Any


class Unusual(Exception):
    """A row or request a fast path does not mirror: MLflow's own view answers it."""


def resolve(qualified: str) -> Any:
    """``module:dotted.path`` as installed (a decorated function: the function itself)."""
    module_name, _, path = qualified.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in path.split("."):
        target = getattr(target, part)
    return getattr(target, "__wrapped__", target)


def source_digest(qualified: str) -> str:
    """SHA-256 of the source of ``module:dotted.path`` as installed."""
    return hashlib.sha256(inspect.getsource(resolve(qualified)).encode()).hexdigest()


def changed(pins: Mapping[str, str]) -> list[str]:
    """The pinned functions whose installed source is not the one that was checked."""
    return [name for name, digest in pins.items() if source_digest(name) != digest]


def json_double(value: float) -> float | str:
    """A proto double as MLflow's JSON has it (json_format writes these three as strings)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


@contextlib.contextmanager
def read_rows(store: Any) -> Iterator[Any]:
    """Something to ``execute`` read-only Core statements on, for ``store``'s database.

    On PostgreSQL a pooled connection in autocommit: no BEGIN and COMMIT round trips around a
    read (what each statement sees is the same: PostgreSQL's default READ COMMITTED gives every
    statement of a transaction its own snapshot anyway). Elsewhere MLflow's managed session,
    with its per-session settings (SQLite's PRAGMAs). Database errors become the
    MlflowExceptions MLflow's managed session raises for them (the driver's own too:
    ``driver_rows`` executes on its cursor)."""
    from mlflow.exceptions import MlflowException

    if store.db_type != "postgresql":
        with store.ManagedSessionMaker() as session:
            yield session
        return
    from mlflow.protos import databricks_pb2
    from sqlalchemy import exc

    driver = store.engine.dialect.loaded_dbapi
    try:
        with store.engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
    except MlflowException:
        raise
    except (exc.OperationalError, driver.OperationalError) as error:
        raise MlflowException(message=str(error),
                              error_code=databricks_pb2.TEMPORARILY_UNAVAILABLE) from error
    except (exc.SQLAlchemyError, driver.Error) as error:
        raise MlflowException(message=str(error),
                              error_code=databricks_pb2.BAD_REQUEST) from error
