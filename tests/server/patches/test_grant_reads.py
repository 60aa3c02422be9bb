"""A user's pattern grants and groups are read once per filtered search (registry, experiments;
server/patches/grant_reads.py): the same decisions, from the same rows, read once.

mlflow-oidc-auth's real auth store on a real PostgreSQL database (and MLflow's real tracking
store for experiment names), its own permission resolution with its permission cache flushed
before each page (the cold case: every row resolved).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow_oidc_auth.sqlalchemy_store import SqlAlchemyStore
from mlflow_oidc_auth.utils import permissions

from harness.postgres import PostgresServer
from harness.statements import statements_sent
from mlflow_stack.server.patches import grant_reads, registry_filter

USER = "ana@example.test"
#: Rows of a page, each decided by another source: direct user and group grants, user and group
#: patterns (one of them a NO_PERMISSIONS pattern of a better priority), and none at all.
NAMES = ["direct-m", "group-m", "rx-open", "rx-hidden-1", "grx-team", "other"]
PER_USER_READS = ("registered_model_regex_permissions", "user_groups.group_id",
                  "registered_model_group_regex_permissions")


@pytest.fixture(scope="module")
def auth_store(postgres_server: PostgresServer) -> Iterator[Any]:
    grant_reads.apply()
    store: Any = SqlAlchemyStore()  # mlflow-oidc-auth is untyped
    store.init_db(postgres_server.new_database("grants"))
    store.create_user(USER, "Ana")
    store.populate_groups(["team-a", "team-b"])
    store.set_user_groups(USER, ["team-a", "team-b"])
    store.create_registered_model_permission("direct-m", USER, "READ")
    store.create_group_model_permission("team-a", "group-m", "EDIT")
    store.create_registered_model_regex_permission("^rx-hidden", 1, "NO_PERMISSIONS", USER)
    store.create_registered_model_regex_permission("^rx-", 5, "READ", USER)
    store.create_group_registered_model_regex_permission("team-b", "^grx-", 1, "MANAGE")
    yield store
    store.engine.dispose()


@pytest.fixture
def resolve(auth_store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """mlflow-oidc-auth's row check on this store, its permission cache cold at every call."""
    monkeypatch.setattr(permissions, "store", auth_store)

    def page(names: list[str]) -> dict[str, str]:
        permissions.flush_permission_cache()
        return {name: permissions.effective_registered_model_permission(name, USER)
                .permission.name for name in names}

    yield page
    permissions.flush_permission_cache()


def _counts(sent: list[str]) -> dict[str, int]:
    return {table: sum(f"FROM {table}" in s or f"SELECT {table}" in s for s in sent)
            for table in PER_USER_READS}


def test_a_page_decides_the_same_and_reads_each_users_list_once(auth_store: Any,
                                                                 resolve: Any) -> None:
    with statements_sent(auth_store.engine) as sent_per_row:
        per_row = resolve(NAMES)
    with statements_sent(auth_store.engine) as sent_once, grant_reads.once_per_request():
        once = resolve(NAMES)
    assert once == per_row
    assert per_row == {"direct-m": "READ", "group-m": "EDIT", "rx-open": "READ",
                       "rx-hidden-1": "NO_PERMISSIONS", "grx-team": "MANAGE",
                       "other": per_row["other"]}  # the configured default
    # Sources are asked in order until one answers: four rows reach the user's patterns, two
    # the groups' (without the memo, each of them reads the lists again).
    assert _counts(sent_per_row) == {"registered_model_regex_permissions": 4,
                                     "user_groups.group_id": 2,
                                     "registered_model_group_regex_permissions": 2}
    assert _counts(sent_once) == dict.fromkeys(PER_USER_READS, 1)
    assert len(sent_once) < len(sent_per_row)


def test_the_memo_ends_with_the_request(auth_store: Any, resolve: Any) -> None:
    with grant_reads.once_per_request():
        assert resolve(["new-m"]) == resolve(["new-m"])
        first = resolve(["new-m"])["new-m"]
    grant = auth_store.create_registered_model_regex_permission("^new-", 2, "MANAGE", USER)
    try:
        assert first != "MANAGE"
        assert resolve(["new-m"]) == {"new-m": "MANAGE"}  # outside: read fresh
        with grant_reads.once_per_request():  # a new request reads them again too
            assert resolve(["new-m"]) == {"new-m": "MANAGE"}
    finally:
        auth_store.delete_registered_model_regex_permission(grant.id, USER)


def test_a_memoized_list_is_handed_out_as_a_copy(auth_store: Any) -> None:
    with grant_reads.once_per_request():
        first = auth_store.list_registered_model_regex_permissions(USER)
        first.clear()
        assert len(auth_store.list_registered_model_regex_permissions(USER)) == 2
        assert auth_store.get_groups_ids_for_user(USER) == auth_store.get_groups_ids_for_user(USER)


def test_applying_twice_wraps_once() -> None:
    grant_reads.apply()
    before = SqlAlchemyStore.get_groups_ids_for_user
    grant_reads.apply()
    assert SqlAlchemyStore.get_groups_ids_for_user is before
    assert vars(before)["__wrapped__"].__name__ == "get_groups_ids_for_user"


def test_the_registry_filters_run_inside_one_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow_oidc_auth.bridge as bridge
    from mlflow.protos import model_registry_pb2

    monkeypatch.setattr(bridge, "get_fastapi_admin_status", lambda: True)
    seen: list[bool] = []

    def upstream(resp: Any) -> None:
        seen.append(grant_reads._MEMO.get() is not None)

    wrapped = registry_filter._skipping(upstream, "registered_models",
                                        model_registry_pb2.SearchRegisteredModels)
    wrapped(object())
    assert seen == [True]
    assert grant_reads._MEMO.get() is None


def test_an_experiment_page_decides_the_same_and_reads_each_users_list_once(
        auth_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server import handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    # MLflow's real tracking store: the pattern sources look the experiment's name up in it.
    make: Any = TrackingStore  # MLflow is untyped
    tracking = make(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"))
    monkeypatch.setattr(handlers, "_tracking_store", tracking)
    monkeypatch.setattr(permissions, "store", auth_store)
    ids = {name: tracking.create_experiment(name)
           for name in ("direct", "group", "team/a", "team/hidden", "shared/b", "other")}
    auth_store.create_experiment_permission(ids["direct"], USER, "EDIT")
    auth_store.create_group_experiment_permission("team-a", ids["group"], "READ")
    auth_store.create_experiment_regex_permission("^team/hidden", 1, "NO_PERMISSIONS", USER)
    auth_store.create_experiment_regex_permission("^team/", 5, "READ", USER)
    auth_store.create_group_experiment_regex_permission("team-b", "^shared/", 1, "MANAGE")

    def page() -> dict[str, str]:
        permissions.flush_permission_cache()
        return {name: permissions.effective_experiment_permission(experiment_id, USER)
                .permission.name for name, experiment_id in ids.items()}

    lists = ("experiment_regex_permissions", "experiment_group_regex_permissions",
             "user_groups.group_id")

    def counts(sent: list[str]) -> list[int]:
        return [sum(f"FROM {t}" in s or f"SELECT {t}" in s for s in sent) for t in lists]

    try:
        with statements_sent(auth_store.engine) as sent_per_row:
            per_row = page()
        with statements_sent(auth_store.engine) as sent_once, grant_reads.once_per_request():
            once = page()
    finally:
        permissions.flush_permission_cache()
        tracking.engine.dispose()
    assert once == per_row
    assert per_row == {"direct": "EDIT", "group": "READ", "team/a": "READ",
                       "team/hidden": "NO_PERMISSIONS", "shared/b": "MANAGE",
                       "other": per_row["other"]}  # the configured default
    assert counts(sent_per_row) == [4, 2, 2]  # as for models: per row that reaches the source
    assert counts(sent_once) == [1, 1, 1]


def test_the_experiment_searches_are_filtered_inside_one_memo(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_oidc_auth.hooks import after_request as hooks
    from mlflow_oidc_auth.hooks import route_policy

    originals = {route: getattr(h, "__wrapped__", h)
                 for route, h in hooks.AFTER_REQUEST_HANDLERS.items()}
    monkeypatch.setattr(hooks, "AFTER_REQUEST_HANDLERS", dict(originals))
    grant_reads.apply()
    grant_reads.apply()  # idempotent: wrapped once
    searches = (hooks._filter_search_experiments, hooks._filter_search_logged_models)
    wrapped = {route: h for route, h in hooks.AFTER_REQUEST_HANDLERS.items()
               if originals[route] in searches}
    assert len(wrapped) >= 4  # /api and /ajax-api for both searches
    for route, handler in wrapped.items():
        assert handler is not originals[route] and handler.__wrapped__ is originals[route]
        assert handler.__name__ == originals[route].__name__
        assert route_policy.is_filtered_in_after_request(*route), route
    others = {r: h for r, h in hooks.AFTER_REQUEST_HANDLERS.items() if r not in wrapped}
    assert others == {r: h for r, h in originals.items() if r not in wrapped}

    seen: list[bool] = []
    grant_reads._in_one_memo(lambda resp: seen.append(grant_reads._MEMO.get() is not None))(None)
    assert seen == [True] and grant_reads._MEMO.get() is None


def test_the_sso_app_wraps_the_experiment_searches() -> None:
    from mlflow_oidc_auth.hooks import after_request as hooks

    from mlflow_stack.server import sso_app

    assert sso_app.app is not None  # its ON_APP patches ran: nothing installed by this test
    handlers = [h for h in hooks.AFTER_REQUEST_HANDLERS.values()
                if getattr(h, "__wrapped__", None) is hooks._filter_search_experiments]
    assert handlers and all(getattr(h, "grant_reads", False) for h in handlers)
    assert getattr(SqlAlchemyStore.list_experiment_regex_permissions, "grant_reads", False)
