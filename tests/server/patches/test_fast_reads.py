"""Metric history, the charts' bulk-interval call and artifact listings from rows
(server/patches/fast_reads.py) answer what MLflow's own views answer, byte for byte, on real
PostgreSQL and on SQLite: points of every kind (NaN, infinities, int64 extremes, many values
at one step), pages, sampling at every size and step range, repeated and unknown runs, local
and proxied artifact roots, and bad requests. The charts' call reads all runs in one statement.

Both views run in a Flask request context of MLflow's own app over the same store.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.server import app as flask_app
from mlflow.server import handlers
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.tracking.dbmodels.models import SqlMetric
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from harness.postgres import PostgresServer
from harness.statements import statements_sent
from mlflow_stack.server.patches import fast_reads

pytestmark = pytest.mark.integration
HISTORY = "/api/2.0/mlflow/metrics/get-history"
BULK = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
LIST = "/api/2.0/mlflow/artifacts/list"
BIG = 2**53 + 1  # int64 beyond a double's exact range
T0 = 1_700_000_000_000


def _populate(store: Any, artifacts: Path) -> dict[str, Any]:
    """Runs whose metric histories and artifacts cover what the three calls can meet."""
    experiment = store.create_experiment("fast-reads")
    runs: list[str] = []
    for n in range(12):
        runs.append(store.create_run(experiment, "u", T0 + n, [], f"run-{n}").info.run_id)

    def log(run: str, metrics: list[Metric]) -> None:
        for start in range(0, len(metrics), 1000):
            store.log_batch(run, metrics[start:start + 1000], [], [])

    log(runs[0], [Metric("loss", 1.0 / (s + 1), T0 + s, s) for s in range(150)]
        + [Metric("loss", 0.5, T0 + 7, 7)])  # a second value at step 7, same time
    log(runs[1], [Metric("loss", float("nan"), T0, 0), Metric("loss", math.inf, T0 + 1, 1),
                  Metric("loss", -math.inf, T0 + 2, 2), Metric("loss", 3.0, BIG, BIG)])
    # MLflow clamps infinities when logging; a database written otherwise may hold them.
    with store.ManagedSessionMaker(read_only=False) as session:
        session.add_all([SqlMetric(run_uuid=runs[1], key="raw", value=value, timestamp=T0,
                                   step=step, is_nan=False)
                         for step, value in enumerate((math.inf, -math.inf, 1.5))])
    log(runs[2], [Metric("loss", float(v), T0 + v, 0) for v in range(40)])  # all at step 0
    log(runs[3], [Metric("loss", 2.0, T0, 5)])  # one point
    # runs[4]: no points; runs[5]: another key only
    log(runs[5], [Metric("acc", 0.5, T0, 1), Metric("größe", 0.25, T0, 1)])  # non-ASCII key
    log(runs[6], [Metric("loss", float(s % 7), T0 + 3 * s, s // 3) for s in range(3000)])
    log(runs[7], [Metric("loss", 1.0, T0 + s, s) for s in range(9)]
        + [Metric("loss", float("nan"), T0 + 9, 9)])  # the last point is NaN
    for n in (8, 9, 10, 11):  # run 10: time runs against the steps (history orders by time)
        log(runs[n], [Metric("loss", n + s / 10, T0 + (60 - s if n == 10 else s), s * 2)
                      for s in range(60)])
    # Artifacts under the run's own (local) root, and a proxied root served from a destination.
    run_root = Path(store.get_run(runs[0]).info.artifact_uri.removeprefix("file://"))
    for relative in ("model/MLmodel", "model/data/weights.bin", "notes.txt", "ü ñ.txt"):
        target = run_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x" * len(relative))
    proxied = f"mlflow-artifacts:/{experiment}/{runs[1]}/artifacts"
    for relative in ("plots/a.png", "summary.json"):
        target = artifacts / experiment / runs[1] / "artifacts" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"y" * 5)
    return {"runs": runs, "proxied": proxied}


def _set_proxied(store: Any, data: dict[str, Any]) -> None:
    from mlflow.store.tracking.dbmodels.models import SqlRun

    with store.ManagedSessionMaker(read_only=False) as session:
        session.query(SqlRun).filter(SqlRun.run_uuid == data["runs"][1]).update(
            {SqlRun.artifact_uri: data["proxied"]})


@pytest.fixture(scope="module")
def pg_store(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Any, dict[str, Any]]]:
    make: Any = SqlAlchemyStore  # MLflow is untyped
    store = make(postgres_server.new_database("fast_reads"),
                 str(tmp_path_factory.mktemp("fast-reads-runs")))
    destination = tmp_path_factory.mktemp("fast-reads-destination")
    data = {**_populate(store, destination), "destination": destination}
    _set_proxied(store, data)
    yield store, data
    store.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("fast-reads-sqlite")
    make: Any = SqlAlchemyStore
    store = make(f"sqlite:///{root}/mlflow.db", str(root / "runs"))
    data = {**_populate(store, root / "destination"), "destination": root / "destination"}
    _set_proxied(store, data)
    return store, data


Answer = tuple[int, str]


def _answer(view: Callable[[], Any], path: str,
            query: list[tuple[str, str]] | dict[str, Any]) -> Answer:
    with flask_app.test_request_context(path, method="GET", query_string=query):
        response = flask_app.make_response(view())
    return response.status_code, response.get_data(as_text=True)


@pytest.fixture
def views(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    """MLflow's views as MLflow registers them, and the fast ones, over `store`; the server
    serves proxied artifacts from the data's destination."""
    originals = {
        HISTORY: handlers._get_metric_history,
        BULK: handlers.get_metric_history_bulk_interval_handler,
        LIST: handlers._list_artifacts,
    }

    def for_store(store: Any, data: dict[str, Any]) -> dict[str, Any]:
        monkeypatch.setattr(handlers, "_tracking_store", store)
        monkeypatch.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "true")  # mlflow server's own
        monkeypatch.setattr(handlers, "_artifact_repo",
                            LocalArtifactRepository(str(data["destination"])))
        makers = {HISTORY: fast_reads.history_view, BULK: fast_reads.bulk_interval_view,
                  LIST: fast_reads.list_view}
        return {path: (view, makers[path](view)) for path, view in originals.items()}

    return for_store


def _compact(text: str) -> str:
    """MLflow's JSON without its indentation (what the servers send: compact_json.py), the
    same keys in the same order, the same numbers, non-ASCII escaped as MLflow escapes it."""
    return json.dumps(json.loads(text), separators=(",", ":"))


def _same(pair: tuple[Any, Any], path: str, query: Any) -> Answer:
    mlflow_view, fast = pair
    status, text = _answer(mlflow_view, path, query)
    expected = (status, _compact(text))
    found = _answer(fast, path, query)
    assert (found[0], _compact(found[1])) == expected, (path, query)
    if status == 200 and path != LIST:  # the listing is written by MLflow's serializer
        assert found[1] == expected[1], (path, query)  # byte for byte
    return expected


BACKENDS = pytest.mark.parametrize("backend", ["pg_store", "sqlite_store"])


@BACKENDS
def test_metric_history_answers_what_mlflow_answers(
        backend: str, request: pytest.FixtureRequest,
        views: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> None:
    store, data = request.getfixturevalue(backend)
    pair = views(store, data)[HISTORY]
    runs = data["runs"]
    for run in runs:
        for key in ("loss", "acc", "raw", "nope", "größe"):
            _same(pair, HISTORY, {"run_id": run, "metric_key": key})
    # Pages, followed to the end, with the same tokens.
    for run, size in ((runs[0], 7), (runs[6], 1000), (runs[1], 1), (runs[3], 1), (runs[10], 9)):
        query = {"run_id": run, "metric_key": "loss", "max_results": size}
        pages = 0
        while True:
            status, text = _same(pair, HISTORY, query)
            assert status == 200
            token = json.loads(text).get("next_page_token")
            if not token:
                break
            query = {**query, "page_token": token}
            pages += 1
        assert pages >= (1 if run != runs[3] else 0)
    special = json.loads(_same(pair, HISTORY, {"run_id": runs[1], "metric_key": "loss"})[1])
    values = [point["value"] for point in special["metrics"]]
    assert values == ["NaN", sys.float_info.max, -sys.float_info.max, 3.0]
    raw = json.loads(_same(pair, HISTORY, {"run_id": runs[1], "metric_key": "raw"})[1])
    assert [point["value"] for point in raw["metrics"]] == ["Infinity", "-Infinity", 1.5]
    assert special["metrics"][3]["timestamp"] == BIG  # an int64, not a rounded double
    _same(pair, HISTORY, {"run_uuid": runs[0], "metric_key": "loss"})  # the older field


@BACKENDS
def test_metric_history_rejects_what_mlflow_rejects(
        backend: str, request: pytest.FixtureRequest,
        views: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> None:
    store, data = request.getfixturevalue(backend)
    pair = views(store, data)[HISTORY]
    run = data["runs"][0]
    for query in ({"metric_key": "loss"}, {"run_id": run},
                  {"run_id": run, "metric_key": "loss", "max_results": 0},
                  {"run_id": run, "metric_key": "loss", "max_results": -3},
                  {"run_id": run, "metric_key": "loss", "page_token": "garbage"}):
        status, _ = _same(pair, HISTORY, query)
        assert status == 400, query
    _same(pair, HISTORY, {"run_id": run, "metric_key": "loss", "max_results": "many"})


def _bulk(runs: list[str], **more: Any) -> list[tuple[str, str]]:
    return [*(("run_ids", run) for run in runs), ("metric_key", more.pop("key", "loss")),
            *((name, str(value)) for name, value in more.items())]


@BACKENDS
def test_bulk_interval_samples_as_mlflow_samples(
        backend: str, request: pytest.FixtureRequest,
        views: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> None:
    store, data = request.getfixturevalue(backend)
    pair = views(store, data)[BULK]
    runs = data["runs"]
    sizes = set()
    for size in (1, 2, 3, 5, 10, 37, 100, 320, 2500):
        status, text = _same(pair, BULK, _bulk(runs, max_results=size))
        assert status == 200
        sizes.add(len(json.loads(text).get("metrics", [])))
    assert len(sizes) >= 6  # the sizes really sampled differently
    _same(pair, BULK, _bulk(runs))  # MLflow's default size
    for start, end in ((0, 0), (3, 40), (7, 7), (100, 2000), (5000, 6000), (-5, 2)):
        _same(pair, BULK, _bulk(runs, max_results=10, start_step=start, end_step=end))
    _same(pair, BULK, _bulk([runs[9], runs[0], runs[9]], max_results=4))  # order, repeats
    _same(pair, BULK, _bulk([runs[4], "0" * 32], max_results=4))  # no points, no run
    _same(pair, BULK, _bulk(runs, key="acc"))
    _same(pair, BULK, _bulk(runs, key="größe"))  # escaped as MLflow escapes it
    _same(pair, BULK, _bulk(runs, key="raw", max_results=2))
    ends = json.loads(_same(pair, BULK, _bulk([runs[7]], max_results=3))[1])["metrics"]
    assert ends[-1]["value"] == "NaN" and ends[-1]["step"] == 9  # the NaN end point is kept


@BACKENDS
def test_bulk_interval_rejects_what_mlflow_rejects(
        backend: str, request: pytest.FixtureRequest,
        views: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> None:
    store, data = request.getfixturevalue(backend)
    pair = views(store, data)[BULK]
    runs = data["runs"][:2]
    for query in (_bulk([]), [("run_ids", runs[0])], _bulk(runs, max_results=0),
                  _bulk(runs, max_results=2501), _bulk(runs, start_step=5, end_step=2),
                  _bulk(runs, start_step=5), _bulk(runs, end_step="x", start_step=1),
                  _bulk([f"{n:032x}" for n in range(101)])):
        status, _ = _same(pair, BULK, query)
        assert status == 400, query


def test_bulk_interval_reads_every_run_in_one_statement(
        pg_store: tuple[Any, dict[str, Any]],
        views: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> None:
    store, data = pg_store
    mlflow_view, fast = views(store, data)[BULK]
    query = _bulk(data["runs"][:10], max_results=50)
    with statements_sent(store.engine) as sent:
        _answer(mlflow_view, BULK, query)
    theirs = len(sent)
    with statements_sent(store.engine) as sent:
        _answer(fast, BULK, query)
    assert theirs >= 20  # MLflow: two statements per run
    assert len([s for s in sent if "metrics" in s]) == 1, sent


@BACKENDS
def test_artifact_listings_answer_what_mlflow_answers(
        backend: str, request: pytest.FixtureRequest,
        views: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> None:
    store, data = request.getfixturevalue(backend)
    pair = views(store, data)[LIST]
    local, proxied = data["runs"][0], data["runs"][1]
    answers = [
        _same(pair, LIST, {"run_id": local}),
        _same(pair, LIST, {"run_id": local, "path": "model"}),
        _same(pair, LIST, {"run_id": local, "path": "model/data"}),
        _same(pair, LIST, {"run_id": local, "path": "nope"}),
        _same(pair, LIST, {"run_uuid": local}),
        _same(pair, LIST, {"run_id": proxied}),
        _same(pair, LIST, {"run_id": proxied, "path": "plots"}),
        _same(pair, LIST, {"run_id": data["runs"][4]}),
    ]
    assert [status for status, _ in answers] == [200] * len(answers)
    listed = json.loads(answers[0][1])
    assert {f["path"] for f in listed["files"]} == {"model", "notes.txt", "ü ñ.txt"}
    assert {f["path"] for f in json.loads(answers[5][1])["files"]} == {"plots", "summary.json"}
    for query, status in (({"run_id": "0" * 32}, 404), ({}, 400),
                          ({"run_id": local, "path": "../../etc"}, 400),
                          ({"run_id": local, "path": "/etc"}, 400)):
        assert _same(pair, LIST, query)[0] == status, query


def test_a_listing_reads_the_run_s_location_only(
        pg_store: tuple[Any, dict[str, Any]],
        views: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> None:
    store, data = pg_store
    _, fast = views(store, data)[LIST]
    with statements_sent(store.engine) as sent:
        assert _answer(fast, LIST, {"run_id": data["runs"][0]})[0] == 200
    assert len(sent) == 1 and "artifact_uri" in sent[0], sent  # MLflow: 7 (the whole run)


@pytest.mark.parametrize("run_id", [None, "0123abc"])
def test_points_are_written_as_the_dicts_would_be_dumped(run_id: str | None) -> None:
    """The directly written points (points_text) are _dump's bytes for every kind of value,
    and rows of other types take _dump's path."""
    rows = [(key, value, timestamp, step, is_nan)
            for key in ("loss", "ü \"q\"\n")
            for value, is_nan in ((0.1, False), (-0.0, False), (1e16, False), (1e-5, False),
                                  (5e-324, False), (sys.float_info.max, False), (math.inf, False),
                                  (-math.inf, False), (math.nan, False), (0.0, True),
                                  (3, False), (True, False))
            for timestamp, step in ((T0, 0), (BIG, -(2**63)), (0, 2**63 - 1))]
    for key in ("loss", "ü \"q\"\n"):
        points = []
        for row_key, value, timestamp, step, is_nan in rows:
            point = fast_reads._point(row_key, value, timestamp, step, is_nan)
            if run_id is not None:
                point["run_id"] = run_id
            points.append(point)
        expected = fast_reads._dump({"metrics": points})
        assert '{"metrics":[' + fast_reads.points_text(key, rows, run_id) + "]}" == expected


def test_points_are_not_built_as_entities(pg_store: tuple[Any, dict[str, Any]],
                                          views: Callable[[Any, dict[str, Any]], dict[str, Any]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store, data = pg_store
    pairs = views(store, data)
    built: list[Any] = []
    entity: Any = SqlMetric.to_mlflow_entity

    def counted(self: Any) -> Any:
        built.append(self)
        return entity(self)

    monkeypatch.setattr(SqlMetric, "to_mlflow_entity", counted)
    query = {"run_id": data["runs"][0], "metric_key": "loss"}
    assert _answer(pairs[HISTORY][1], HISTORY, query)[0] == 200
    assert built == []
    assert _answer(pairs[HISTORY][0], HISTORY, query)[0] == 200
    assert built  # MLflow's view builds one per point


def test_a_scoping_store_is_left_to_mlflow(pg_store: tuple[Any, dict[str, Any]],
                                          views: Callable[[Any, dict[str, Any]], dict[str, Any]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store, data = pg_store
    refused: list[str] = []

    class Scoped(SqlAlchemyStore):
        def _validate_run_accessible(self, session: Any, run_id: str) -> None:
            refused.append(run_id)
            raise MlflowException("not in this workspace", RESOURCE_DOES_NOT_EXIST)

    scoped = Scoped.__new__(Scoped)
    scoped.__dict__.update(store.__dict__)
    pairs = views(scoped, data)
    run = data["runs"][0]
    assert _answer(pairs[HISTORY][1], HISTORY, {"run_id": run, "metric_key": "loss"})[0] == 404
    assert _answer(pairs[BULK][1], BULK, _bulk([run]))[0] == 404
    assert refused == [run, run]


def test_the_pinned_mlflow_is_the_one_the_fast_paths_were_checked_against() -> None:
    assert fast_reads.changed_upstream() == []


def test_another_mlflow_leaves_that_view_mlflow_s(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    app = Flask("probe")
    import mlflow.server

    for endpoint in fast_reads.VIEWS:  # MLflow's views (the apps replace only view_functions)
        app.view_functions[endpoint] = getattr(handlers, endpoint, None) or \
            getattr(mlflow.server, endpoint)
    before = dict(app.view_functions)
    monkeypatch.setitem(fast_reads.BULK_PINS, "mlflow.entities.metric:MetricWithRunId.to_proto",
                        "0" * 64)
    installed = fast_reads.install(app)
    assert set(installed) == {fast_reads.HISTORY.name, fast_reads.LIST.name}
    assert app.view_functions[fast_reads.BULK.name] is before[fast_reads.BULK.name]
    monkeypatch.undo()
    assert set(fast_reads.install(app)) == set(fast_reads.VIEWS)
    assert all(getattr(app.view_functions[e], "fast_reads", False) for e in fast_reads.VIEWS)


def test_both_apps_serve_the_three_calls_through_it() -> None:
    from mlflow_stack.server import plain_app, sso_app

    assert plain_app.app is not None and sso_app.app is not None
    for endpoint in fast_reads.VIEWS:
        assert getattr(flask_app.view_functions[endpoint], "fast_reads", False), endpoint


def test_every_call_reads_the_database(
        pg_store: tuple[Any, dict[str, Any]],
        views: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> None:
    store, data = pg_store
    _, fast = views(store, data)[HISTORY]
    run = data["runs"][3]
    query = {"run_id": run, "metric_key": "loss"}
    assert json.loads(_answer(fast, HISTORY, query)[1])["metrics"][0]["value"] == 2.0
    dsn = store.engine.url.render_as_string(hide_password=False).replace("+psycopg", "", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE metrics SET value = 4.0 WHERE run_uuid = %s", (run,))
    try:
        assert json.loads(_answer(fast, HISTORY, query)[1])["metrics"][0]["value"] == 4.0
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE metrics SET value = 2.0 WHERE run_uuid = %s", (run,))
