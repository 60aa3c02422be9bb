"""Read-only store sessions keep what they loaded at commit; nothing is served stale.

MLflow's real SqlAlchemyStore (tracking and registry) on SQLite, after the patch is applied
as the apps apply it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Param, RunStatus, RunTag, ViewType
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from mlflow_stack.server.patches import read_sessions


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    read_sessions.apply()
    root: Path = tmp_path_factory.mktemp("read-sessions")
    uri = f"sqlite:///{root}/mlflow.db"
    make: Any = SqlAlchemyStore  # MLflow is untyped
    tracking = make(uri, str(root / "artifacts"))
    make = RegistryStore
    yield tracking, make(uri)


def test_read_sessions_do_not_expire_and_write_sessions_do(stores: tuple[Any, Any]) -> None:
    for store in stores:
        with store.ManagedSessionMaker() as session:
            assert session.expire_on_commit is False
        with store.ManagedSessionMaker(read_only=True) as session:
            assert session.expire_on_commit is False
        with store.ManagedSessionMaker(read_only=False) as session:
            assert session.expire_on_commit is True


def test_every_read_sees_the_writes_before_it(stores: tuple[Any, Any]) -> None:
    tracking, registry = stores
    experiment = tracking.create_experiment("fresh")
    run = tracking.create_run(experiment, "ana", 1, [], "first-name")
    run_id = run.info.run_id

    def search() -> Any:
        (found,) = tracking.search_runs([experiment], "", ViewType.ACTIVE_ONLY, 10, [], None)
        return found

    assert search().data.tags.get("team") is None
    tracking.log_batch(run_id, [], [Param("optimizer", "adam")], [RunTag("team", "vision")])
    assert search().data.tags["team"] == "vision"
    assert search().data.params == {"optimizer": "adam"}
    tracking.set_tag(run_id, RunTag("team", "nlp"))
    assert search().data.tags["team"] == "nlp"
    assert tracking.get_run(run_id).data.tags["team"] == "nlp"
    tracking.update_run_info(run_id, RunStatus.FINISHED, 2, "second-name")
    assert search().info.run_name == "second-name" and search().info.status == "FINISHED"

    registry.create_registered_model("m", description="one")
    assert registry.get_registered_model("m").description == "one"
    registry.update_registered_model("m", "two")
    assert registry.get_registered_model("m").description == "two"
    assert [m.description for m in registry.search_registered_models()] == ["two"]


def test_applying_twice_keeps_one_replacement() -> None:
    import mlflow.store.db.utils as db_utils

    read_sessions.apply()
    before = db_utils._get_managed_session_maker
    read_sessions.apply()
    assert db_utils._get_managed_session_maker is before
    assert vars(before)["__wrapped__"].__name__ == "_get_managed_session_maker"
