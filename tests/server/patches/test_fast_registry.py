"""Registry searches from rows (server/patches/fast_registry.py) return what MLflow's store
returns, on real PostgreSQL and SQLite: every filter and order the store accepts, pages to the
end, latest versions per stage with deleted ones left out, tags, aliases, prompts excluded
unless asked for, unicode, and MLflow's errors for bad arguments. Compared as MLflow's server
would send them (each entity's protobuf as JSON); what MLflow leaves unordered is sorted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import model_registry
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.proto_json_utils import message_to_json

from harness.postgres import PostgresServer
from harness.statements import statements_sent
from mlflow_stack.server.patches import fast_registry

pytestmark = pytest.mark.integration
PROMPT_TAG = "mlflow.prompt.is_prompt"
RegisteredModelTag: Any = model_registry.RegisteredModelTag  # MLflow is untyped
ModelVersionTag: Any = model_registry.ModelVersionTag


def _populate(store: Any) -> None:
    for n in range(13):
        name = f"model-{n:02d}" if n != 7 else "mødel ü \"q\""
        store.create_registered_model(
            name, [RegisteredModelTag("team", ("vision", "nlp")[n % 2]),
                   RegisteredModelTag("n", str(n))], description=f"model {n}" if n % 3 else None)
        for v in range(n % 5):
            store.create_model_version(
                name, f"s3://bucket/{name}/{v}", run_id=None,
                tags=[ModelVersionTag("v", str(v)), ModelVersionTag("kind", "x" * v)],
                description=None if v % 2 else f"version {v}")
        if n % 5 >= 3:
            store.transition_model_version_stage(name, "1", "Production", False)
            store.transition_model_version_stage(name, "2", "Staging", False)
            store.set_registered_model_alias(name, "champion", "1")
            store.set_registered_model_alias(name, "challenger", "2")
        if n % 5 == 4:
            store.delete_model_version(name, "4")  # the newest: not a latest version any more
            store.transition_model_version_stage(name, "3", "Archived", False)
    store.create_registered_model("a-prompt", [RegisteredModelTag(PROMPT_TAG, "true")])
    store.create_model_version("a-prompt", "prompt text", tags=[
        ModelVersionTag(PROMPT_TAG, "true")])


@pytest.fixture(scope="module")
def pg_store(postgres_server: PostgresServer) -> Any:
    make: Any = SqlAlchemyStore  # MLflow is untyped
    store = make(postgres_server.new_database("fast_registry"))
    _populate(store)
    yield store
    store.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root: Path = tmp_path_factory.mktemp("fast-registry")
    make: Any = SqlAlchemyStore
    store = make(f"sqlite:///{root}/registry.db")
    _populate(store)
    return store


def _mlflow(method: str) -> Callable[..., Any]:
    """MLflow's method, also after an app installed the fast one on the class."""
    current = getattr(SqlAlchemyStore, method)
    found: Callable[..., Any] = getattr(current, "__wrapped__", current)
    return found


def _fast(method: str) -> Callable[..., Any]:
    make, _ = fast_registry.METHODS[method]
    return make(_mlflow(method))


def _sorted(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def _sent(entity: Any) -> dict[str, Any]:
    """The entity as the server sends it, with MLflow's unordered lists sorted."""
    return _sorted_body(json.loads(message_to_json(entity.to_proto())))


def _sorted_body(item: dict[str, Any]) -> dict[str, Any]:
    """A model or version as JSON, with MLflow's unordered lists sorted."""
    for field in ("tags", "aliases"):
        if field in item:
            item[field] = _sorted(item[field])
    if "latest_versions" in item:
        item["latest_versions"] = _sorted([
            {**v, "tags": _sorted(v.get("tags", []))} for v in item["latest_versions"]])
    return item


def _result(method: Callable[..., Any], store: Any, **args: Any) -> Any:
    try:
        found = method(store, **args)
    except MlflowException as error:
        return ("error", error.error_code, error.message)
    return [_sent(e) for e in found], found.token


BACKENDS = pytest.mark.parametrize("backend", ["pg_store", "sqlite_store"])
MODEL_SEARCHES: list[dict[str, Any]] = [
    {},
    {"max_results": 5},
    {"max_results": 1, "order_by": ["name DESC"]},
    {"filter_string": "name = 'model-03'"},
    {"filter_string": "name LIKE 'model-1%'", "order_by": ["last_updated_timestamp DESC"]},
    {"filter_string": "name ILIKE '%ü%'"},
    {"filter_string": "tags.team = 'nlp'", "max_results": 3},
    {"filter_string": "tags.team = 'vision' and tags.n != '4'"},
    {"filter_string": f"tags.`{PROMPT_TAG}` = 'true'"},
    {"filter_string": "name = 'nope'"},
    {"order_by": ["timestamp ASC", "name DESC"]},
]
VERSION_SEARCHES: list[dict[str, Any]] = [
    {},
    {"max_results": 4},
    {"filter_string": "name = 'model-04'"},
    {"filter_string": "name = 'model-09'", "order_by": ["version_number ASC"]},
    {"filter_string": "name LIKE 'model-0%'", "max_results": 3},
    {"filter_string": "tags.v = '1'"},
    {"filter_string": "tags.kind = 'xx' and name != 'model-02'"},
    {"filter_string": "source_path = 's3://bucket/model-03/1'"},
    {"filter_string": "version_number > 1", "order_by": ["name ASC", "version_number DESC"]},
    {"filter_string": f"tags.`{PROMPT_TAG}` = 'true'"},
    {"order_by": ["creation_timestamp DESC"], "max_results": 7},
]


@BACKENDS
@pytest.mark.parametrize(("method", "searches"), [
    ("search_registered_models", MODEL_SEARCHES), ("search_model_versions", VERSION_SEARCHES)])
def test_every_search_returns_what_mlflow_returns(backend: str, method: str,
                                                  searches: list[dict[str, Any]],
                                                  request: pytest.FixtureRequest) -> None:
    store = request.getfixturevalue(backend)
    theirs, ours = _mlflow(method), _fast(method)
    kinds = set()
    for args in searches:
        expected = _result(theirs, store, **args)
        assert _result(ours, store, **args) == expected, args
        kinds.add(len(expected[0]) if expected[0] != "error" else -1)
        pages = 0
        while expected[1] and pages < 20:  # follow the pages with MLflow's token
            args = {**args, "page_token": expected[1]}
            expected = _result(theirs, store, **args)
            assert _result(ours, store, **args) == expected, args
            pages += 1
    assert len(kinds) >= 4  # empty, one, some, many: the cases are not all alike


@BACKENDS
def test_latest_versions_tags_and_aliases_reach_the_answer(backend: str,
                                                           request: pytest.FixtureRequest) -> None:
    store = request.getfixturevalue(backend)
    found, _ = _result(_fast("search_registered_models"), store,
                       filter_string="name = 'model-04'")
    model = found[0]
    stages = {v["current_stage"]: v["version"] for v in model["latest_versions"]}
    assert stages == {"Production": "1", "Staging": "2", "Archived": "3"}  # 4 was deleted
    assert {a["alias"]: a["version"] for a in model["aliases"]} == {"champion": "1",
                                                                    "challenger": "2"}
    assert {"key": "n", "value": "4"} in model["tags"]
    versions, _ = _result(_fast("search_model_versions"), store,
                          filter_string="name = 'model-03'")
    tags = {v["version"]: v.get("tags", []) for v in versions}
    assert {"key": "kind", "value": "xx"} in tags["3"] and {"key": "v", "value": "2"} in tags["3"]


@BACKENDS
def test_bad_arguments_get_mlflow_s_errors(backend: str, request: pytest.FixtureRequest) -> None:
    store = request.getfixturevalue(backend)
    for method, args in (
            ("search_registered_models", {"max_results": 1001}),
            ("search_registered_models", {"filter_string": "name ~ 'x'"}),
            ("search_registered_models", {"filter_string": "description = 'x'"}),
            ("search_registered_models", {"order_by": ["nope ASC"]}),
            ("search_registered_models", {"page_token": "garbage"}),
            ("search_model_versions", {"max_results": 0}),
            ("search_model_versions", {"max_results": 200_001}),
            ("search_model_versions", {"filter_string": "run_id IN ('a'"}),
            ("search_model_versions", {"order_by": ["nope"]}),
            ("search_model_versions", {"page_token": "garbage"})):
        expected = _result(_mlflow(method), store, **args)
        assert expected[0] == "error", (method, args)
        assert _result(_fast(method), store, **args) == expected, (method, args)


def test_versions_are_read_as_rows_in_a_few_statements(
        pg_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    entity: Any = SqlModelVersion.to_mlflow_entity

    def counted(self: Any) -> Any:
        built.append(self)
        return entity(self)

    monkeypatch.setattr(SqlModelVersion, "to_mlflow_entity", counted)
    with statements_sent(pg_store.engine) as sent:
        _fast("search_registered_models")(pg_store, max_results=100)
    assert built == []  # no ORM version objects became entities
    assert len(sent) <= 3, sent  # models; latest versions with their tags; tags and aliases


def test_a_search_s_statement_is_built_once_and_its_rows_read_every_time(
        postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    make: Any = SqlAlchemyStore  # MLflow is untyped
    store = make(postgres_server.new_database("fast_registry_kept"))
    store.create_registered_model("kept-1")
    store.create_model_version("kept-1", "s3://bucket/kept-1/1")
    built: list[Any] = []
    clauses: Any = SqlAlchemyStore._get_search_model_versions_filter_clauses  # MLflow is untyped

    def counted(self: Any, *args: Any) -> Any:
        built.append(args)
        return clauses(self, *args)

    monkeypatch.setattr(SqlAlchemyStore, "_get_search_model_versions_filter_clauses", counted)
    search = _fast("search_model_versions")
    assert [v.version for v in search(store, "name = 'kept-1'")] == [1]
    store.create_model_version("kept-1", "s3://bucket/kept-1/2")
    store.update_model_version("kept-1", "1", "now described")
    again = search(store, "name = 'kept-1'")
    assert sorted(v.version for v in again) == [1, 2]  # rows read again: nothing stale
    assert {v.version: v.description for v in again}[1] == "now described"
    assert len(built) == 1  # MLflow built the statement once for both
    assert len(search(store, "name = 'kept-1'", 1)) == 1  # other arguments: built again
    assert len(built) == 2
    with pytest.raises(MlflowException):  # an error is raised every time, never kept
        search(store, "name = ")
    with pytest.raises(MlflowException):
        search(store, "name = ")


def test_a_store_subclass_keeps_mlflow_s_method(pg_store: Any) -> None:
    called: list[str] = []
    original = _mlflow("search_model_versions")

    def spy(self: Any, *args: Any) -> Any:
        called.append("mlflow")
        return original(self, *args)

    class Scoped(SqlAlchemyStore):
        pass

    scoped = Scoped.__new__(Scoped)
    scoped.__dict__.update(pg_store.__dict__)
    fast = fast_registry.search_model_versions(spy)
    fast(scoped, "name = 'model-03'", 10)
    assert called == ["mlflow"]
    fast(pg_store, "name = 'model-03'", 10)
    assert called == ["mlflow"]  # the plain store: the fast path


def test_the_pinned_mlflow_is_the_one_the_fast_paths_were_checked_against() -> None:
    assert fast_registry.changed_upstream() == []


def test_another_mlflow_leaves_that_method_mlflow_s(monkeypatch: pytest.MonkeyPatch) -> None:
    class Probe:
        search_registered_models = _mlflow("search_registered_models")
        search_model_versions = _mlflow("search_model_versions")

    name = next(iter(fast_registry.VERSIONS_PINS))
    monkeypatch.setitem(fast_registry.VERSIONS_PINS, name, "0" * 64)
    assert fast_registry.install(Probe) == ["search_registered_models"]
    assert vars(Probe)["search_model_versions"] is _mlflow("search_model_versions")
    monkeypatch.undo()
    assert fast_registry.install(Probe) == ["search_registered_models", "search_model_versions"]


def test_both_apps_use_it() -> None:
    from mlflow_stack.server import plain_app, sso_app

    assert plain_app.app is not None and sso_app.app is not None
    for method in fast_registry.METHODS:
        assert getattr(getattr(SqlAlchemyStore, method), "fast_registry", False), method


def test_mlflow_s_handlers_get_the_same_answer_through_it(
        pg_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the server's handlers (which pass a protobuf repeated field as ``order_by``),
    first with MLflow's methods, then with the fast ones."""
    from mlflow.server import app as flask_app
    from mlflow.server import handlers

    monkeypatch.setattr(handlers, "_model_registry_store", pg_store)
    calls = [
        (handlers._search_registered_models, "/api/2.0/mlflow/registered-models/search",
         [("max_results", "4"), ("order_by", "name DESC"), ("order_by", "timestamp ASC")]),
        (handlers._search_registered_models, "/api/2.0/mlflow/registered-models/search",
         [("filter", "tags.team = 'nlp'")]),
        (handlers._search_model_versions, "/api/2.0/mlflow/model-versions/search",
         [("filter", "name LIKE 'model-0%'"), ("max_results", "3"),
          ("order_by", "version_number ASC")]),
    ]

    def answers() -> list[tuple[int, Any]]:
        found = []
        for view, path, query in calls * 2:  # twice: the kept statements answer again
            with flask_app.test_request_context(path, method="GET", query_string=query):
                response = flask_app.make_response(view())
            body = json.loads(response.get_data(as_text=True))
            for key in ("registered_models", "model_versions"):
                body[key] = [_sorted_body(item) for item in body.get(key, [])]
            found.append((response.status_code, body))
        return found

    for method in fast_registry.METHODS:
        monkeypatch.setattr(SqlAlchemyStore, method, _mlflow(method))
    expected = answers()
    assert all(status == 200 for status, _ in expected), expected
    for method in fast_registry.METHODS:
        monkeypatch.setattr(SqlAlchemyStore, method, _fast(method))
    assert answers() == expected

