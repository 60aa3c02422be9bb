"""``runs/search`` from rows (server/patches/fast_runs_search.py) answers what MLflow's own view
answers, on real PostgreSQL and on SQLite, for what the UI and clients send: the experiment
page, every kind of filter and order, pagination, deleted runs, datasets, logged-model
outputs, NaN and infinite metrics, unicode, and bad requests.

Both views run in a Flask request context of MLflow's own app over the same store; the lists
whose order MLflow does not define (a run's metrics, params and tags) are compared sorted.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.server import app as flask_app
from mlflow.server import handlers
from mlflow.store.tracking.dbmodels.models import SqlRun
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from harness.postgres import PostgresServer
from mlflow_stack.server.patches import fast_runs_search

pytestmark = pytest.mark.integration
SEARCH = "/api/2.0/mlflow/runs/search"
BIG = 2**53 + 1  # int64 beyond a double's exact range


def _populate(store: Any) -> dict[str, Any]:
    """Three experiments with runs covering what a search can meet."""
    ids = [store.create_experiment(f"exp-{n}-{uuid.uuid4().hex[:6]}") for n in range(3)]
    runs: list[str] = []
    for n in range(37):
        experiment = ids[n % 2]
        run = store.create_run(experiment, f"user-{n % 4}", 1_700_000_000_000 + n * 1000,
                               [RunTag("team", ("vision", "nlp", "ünï \"q\"")[n % 3])],
                               f"run-{n}")
        run_id = run.info.run_id
        runs.append(run_id)
        metrics = [Metric("loss", 1.0 / (n + 1), 1_700_000_000_000 + n, n),
                   Metric("acc", n / 40, BIG, BIG)]
        if n % 5 == 0:
            metrics.append(Metric("odd", float("nan"), 5, 0))
        if n % 7 == 0:
            metrics.append(Metric("huge", math.inf, 5, 1))
            metrics.append(Metric("tiny", -math.inf, 5, 2))
        params = [Param("lr", str(0.1 / (n + 1))), Param("opt", ("adam", "sgd")[n % 2])]
        store.log_batch(run_id, metrics, params, [RunTag("stage", str(n % 3))])
        if n % 3 == 0:
            store.update_run_info(run_id, RunStatus.FINISHED, 1_700_000_100_000 + n, None)
        if n % 9 == 4:
            store.delete_run(run_id)
    # A run without params or metrics, one without any tag but its name.
    bare = store.create_run(ids[2], "u", 1, [], "bare").info.run_id
    # Datasets as inputs, and a logged model as an output.
    dataset = Dataset("train", "d1g3st", "local", "file:///data/train.csv", schema='{"a": 1}',
                      profile='{"n": 3}')
    store.log_inputs(runs[0], [DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])])
    store.log_inputs(runs[2], [DatasetInput(dataset, [])])
    model = store.create_logged_model(ids[0], name="m", source_run_id=runs[0])
    store.log_outputs(runs[0], [LoggedModelOutput(model.model_id, 3)])
    return {"experiments": ids, "runs": runs, "bare": bare}


@pytest.fixture(scope="module")
def pg_store(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Any, dict[str, Any]]]:
    uri = postgres_server.new_database("fast_search")
    make: Any = SqlAlchemyStore  # MLflow is untyped
    store = make(uri, str(tmp_path_factory.mktemp("fast-search-artifacts")))
    data = _populate(store)
    # A run whose name column is empty: MLflow names it from its mlflow.runName tag.
    with psycopg.connect(uri.replace("+psycopg", "", 1), autocommit=True) as conn:
        conn.execute("UPDATE runs SET name = NULL WHERE run_uuid = %s", (data["runs"][1],))
        conn.execute("UPDATE runs SET name = '' WHERE run_uuid = %s", (data["runs"][3],))
    yield store, data
    store.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("fast-search-sqlite")
    make: Any = SqlAlchemyStore
    store = make(f"sqlite:///{root}/mlflow.db", str(root / "artifacts"))
    return store, _populate(store)


def _normalized(body: dict[str, Any]) -> dict[str, Any]:
    for run in body.get("runs", []):
        for field in ("metrics", "params", "tags"):
            if field in run["data"]:
                run["data"][field].sort(key=lambda item: json.dumps(item, sort_keys=True))
    return body


def _answer(view: Callable[[], Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    with flask_app.test_request_context(SEARCH, method="POST", json=body):
        response = flask_app.make_response(view())
    return response.status_code, _normalized(json.loads(response.get_data()))


@pytest.fixture
def views(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], tuple[Any, Any]]:
    original = handlers._search_runs  # MLflow's view, as MLflow registers it

    def for_store(store: Any) -> tuple[Any, Any]:
        monkeypatch.setattr(handlers, "_tracking_store", store)
        return original, fast_runs_search.fast_view(original)

    return for_store


def _bodies(data: dict[str, Any]) -> list[dict[str, Any]]:
    exp = data["experiments"]
    page = {"experiment_ids": [exp[0]], "max_results": 100,
            "order_by": ["attributes.start_time DESC"], "run_view_type": "ACTIVE_ONLY"}
    return [
        page,
        {**page, "experiment_ids": exp},
        {**page, "max_results": 5},
        {**page, "run_view_type": "ALL"},
        {**page, "run_view_type": "DELETED_ONLY"},
        {"experiment_ids": exp},  # MLflow's defaults: 1000 runs, natural order
        {"experiment_ids": [exp[2]]},
        {**page, "filter": "metrics.loss < 0.2"},
        {**page, "filter": "metrics.odd = 0 or metrics.acc > 0.3"},
        {**page, "filter": "params.opt = 'sgd'"},
        {**page, "filter": "tags.team = 'ünï \"q\"'"},
        {**page, "filter": "tags.team LIKE 'vi%' and params.lr != '0.1'"},
        {**page, "filter": "attributes.status = 'FINISHED'"},
        {**page, "filter": "attributes.run_name ILIKE 'run-1%'"},
        {**page, "filter": "dataset.name = 'train'"},
        {**page, "filter": "dataset.context = 'train'"},
        {**page, "order_by": ["metrics.loss ASC"]},
        {**page, "order_by": ["metrics.huge DESC", "params.lr"]},
        {**page, "order_by": ["tags.team", "attributes.end_time DESC"]},
        {**page, "experiment_ids": ["999999"]},
        {**page, "filter": "metrics.nope > 1"},
    ]


@pytest.mark.parametrize("backend", ["pg_store", "sqlite_store"])
def test_every_search_answers_what_mlflow_answers(
        backend: str, request: pytest.FixtureRequest,
        views: Callable[[Any], tuple[Any, Any]]) -> None:
    store, data = request.getfixturevalue(backend)
    mlflow_view, fast = views(store)
    shapes = set()
    for body in _bodies(data):
        expected = _answer(mlflow_view, body)
        assert _answer(fast, body) == expected, body
        shapes.add(json.dumps(sorted(expected[1].keys())))
        # Follow the pages to the end: the same tokens, the same runs.
        seen = 0
        while "next_page_token" in expected[1] and seen < 20:
            body = {**body, "page_token": expected[1]["next_page_token"]}
            expected = _answer(mlflow_view, body)
            assert _answer(fast, body) == expected, body
            seen += 1
    assert len(shapes) >= 3  # empty, one page, more pages: the cases are not all alike


def test_what_the_rows_carry_reaches_the_json(pg_store: tuple[Any, dict[str, Any]],
                                              views: Callable[[Any], tuple[Any, Any]]) -> None:
    store, data = pg_store
    _, fast = views(store)
    status, body = _answer(fast, {"experiment_ids": data["experiments"][:1], "max_results": 100,
                                  "run_view_type": "ALL"})
    assert status == 200
    by_id = {run["info"]["run_id"]: run for run in body["runs"]}
    first = by_id[data["runs"][0]]
    metrics = {m["key"]: m for m in first["data"]["metrics"]}
    assert metrics["odd"]["value"] == "NaN"
    assert metrics["acc"]["timestamp"] == BIG and metrics["acc"]["step"] == BIG
    assert first["inputs"]["dataset_inputs"][0]["dataset"]["digest"] == "d1g3st"
    assert first["outputs"]["model_outputs"][0]["step"] == 3
    assert by_id[data["runs"][2]]["info"]["run_name"] == "run-2"


def test_the_mlflow_view_answers_what_this_module_does_not_mirror(
        pg_store: tuple[Any, dict[str, Any]], views: Callable[[Any], tuple[Any, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, data = pg_store
    mlflow_view, fast = views(store)
    body = {"experiment_ids": data["experiments"][:1]}
    built: list[Any] = []
    entity: Any = SqlRun.to_mlflow_entity

    def counted(self: Any) -> Any:
        built.append(self)
        return entity(self)

    monkeypatch.setattr(SqlRun, "to_mlflow_entity", counted)
    assert _answer(fast, body)[0] == 200
    assert built == []  # the rows went straight to JSON
    monkeypatch.setattr(fast_runs_search, "RUN_STATUSES", frozenset())
    assert _answer(fast, body) == _answer(mlflow_view, body)
    assert built  # an unusual row: MLflow's own view built entities


def test_bad_requests_get_mlflow_s_errors(sqlite_store: tuple[Any, dict[str, Any]],
                                          views: Callable[[Any], tuple[Any, Any]]) -> None:
    store, data = sqlite_store
    mlflow_view, fast = views(store)
    for body in ({"experiment_ids": data["experiments"], "max_results": 50001},
                 {"experiment_ids": data["experiments"], "filter": "metrics.loss <<< 1"},
                 {"experiment_ids": data["experiments"], "order_by": ["nope.x"]},
                 {"experiment_ids": "1"},
                 {"experiment_ids": data["experiments"], "page_token": "garbage"}):
        expected = _answer(mlflow_view, body)
        assert expected[0] == 400, body
        assert _answer(fast, body) == expected, body


def test_the_pinned_mlflow_is_the_one_the_fast_path_was_checked_against() -> None:
    assert fast_runs_search.changed_upstream() == []


def test_another_mlflow_leaves_mlflow_s_view_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    app = Flask("probe")
    original = handlers._search_runs
    app.view_functions["_search_runs"] = original
    monkeypatch.setitem(fast_runs_search.MIRRORED, "mlflow.entities.run:Run.to_proto", "0" * 64)
    assert fast_runs_search.install(app) is False
    assert app.view_functions["_search_runs"] is original
    monkeypatch.undo()
    assert fast_runs_search.install(app) is True
    assert getattr(app.view_functions["_search_runs"], "fast_runs_search", False)


def test_both_apps_serve_runs_search_through_it() -> None:
    from mlflow_stack.server import plain_app, sso_app

    assert plain_app.app is not None and sso_app.app is not None
    assert getattr(flask_app.view_functions["_search_runs"], "fast_runs_search", False)
