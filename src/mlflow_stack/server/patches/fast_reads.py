"""The charts' and the run page's small reads answered from rows (speed; the same JSON).

Three calls a user waits on whenever a run or its charts open:

- ``metrics/get-history`` (one metric of one run): MLflow loads each point as an ORM object,
  then an entity, then a protobuf, then a dict. Here one statement's rows become the dict.
- ``metrics/get-history-bulk-interval`` (the charts: one metric of up to 100 runs, sampled):
  MLflow sends two statements per run (10 runs, 20 statements, each a round trip to the
  database). Here one statement samples every run with the same window functions, partitioned
  by run, and reads each run's last point in the same pass.
- ``artifacts/list``: MLflow loads the whole run (7 statements: tags, params, metrics, inputs,
  model inputs and outputs) to read its artifact location. Here one statement reads that
  location; the listing itself is MLflow's (its repositories, its path checks, its protobufs).

Everything else stays MLflow's: request parsing and validation (the same validators and error
messages), page tokens, which rows are read and in which order, the sampling rule (every
``max_results``-th bucket's first point, plus the last point), presence and number rules of the
JSON. A store that is not MLflow's plain ``SqlAlchemyStore`` (a workspace-aware one scopes its
queries), a database other than PostgreSQL or SQLite, and a mirrored function whose source
changed (``mirrors.changed``) leave MLflow's view answering. No rows are cached: every call
reads the database (the fixed statements are built once, their values bound per call).
tests/server/patches/test_fast_reads.py asks both views the same calls on real PostgreSQL and
SQLite and requires the same answer byte for byte.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mlflow_stack.server.driver_rows import fetch_all
from mlflow_stack.server.guards import Shape, wrapping
from mlflow_stack.server.mirrors import changed, json_double, read_rows

log = logging.getLogger(__name__)

STORE = "mlflow.store.tracking.sqlalchemy_store"
HANDLERS = "mlflow.server.handlers"
STORE_TYPE = Shape(STORE, "SqlAlchemyStore")
REQUEST = Shape(HANDLERS, "_get_request_message", ("request_message", "flask_request", "schema"))
HISTORY = Shape(HANDLERS, "_get_metric_history", ())
BULK = Shape(HANDLERS, "get_metric_history_bulk_interval_handler", ())
UI_BULK = Shape("mlflow.server", "serve_get_metric_history_bulk_interval", ())
LIST = Shape(HANDLERS, "_list_artifacts", ())
UPSTREAM = (STORE_TYPE, REQUEST, HISTORY, BULK, UI_BULK, LIST)

_ENTITY = {
    "mlflow.store.tracking.dbmodels.models:SqlMetric.to_mlflow_entity":
        "ed77c08f03d747e1b2a61241f42507965d195618656f851acdae504cc8afd208",
    "mlflow.entities.metric:Metric.to_proto":
        "fd40b900b388c6d9f79d7241b94742697d5b58af0ba17ae23537f5060389a8d9",
}

#: Per view: what it mirrors, by SHA-256 of the source in the pinned MLflow.
HISTORY_PINS: dict[str, str] = {
    "mlflow.server.handlers:_get_metric_history":
        "36f50171b2d09e858f0e59d1b4cdf5c91f6dd6ba6ff99820168bde1b11ea2fca",
    "mlflow.store.tracking.sqlalchemy_store:SqlAlchemyStore.get_metric_history":
        "2dc49cb772ee972b710f4578799635e2bb8fecea37e4cea3064a0e849ea9825c",
    **_ENTITY,
}
BULK_PINS: dict[str, str] = {
    "mlflow.server:serve_get_metric_history_bulk_interval":
        "9ae82943346bc8b94ee9c488984301fbb6dba4343ec90d487cb182e2bd81f5bd",
    "mlflow.server.handlers:get_metric_history_bulk_interval_handler":
        "0109aed21e9df7abfe34adaa7c1e75a683918426779fc42e6d8cf32b0a52e766",
    "mlflow.server.handlers:get_metric_history_bulk_interval_impl":
        "314df9d19b0a3b0a9eb73e174d6b766af71d4548b2c3a26bf0231f8926b82529",
    "mlflow.store.tracking.sqlalchemy_store:SqlAlchemyStore.get_metric_history_bulk_interval":
        "acca1180ce9b26b2b85d95d7c5c2be8983aecd3cba28521cac3b1fbb69368942",
    "mlflow.store.tracking.sqlalchemy_store:SqlAlchemyStore._sample_metric_history_single_run":
        "d1d958e93bfb11f502bf77c3f69d4736d4d7485c7cf0ea1cdae39575469d2d48",
    "mlflow.store.tracking.sqlalchemy_store:SqlAlchemyStore._sample_rows_with_window_functions":
        "ab1a8649ad93abc71452dccc18ed697725ebddca7968035e5ca3ab373d8e611a",
    "mlflow.entities.metric:MetricWithRunId.to_proto":
        "5ea9648642839726a11896f74d589f682c2225762e2fbfb7446d5d89adafba6b",
}
LIST_PINS: dict[str, str] = {
    "mlflow.server.handlers:_list_artifacts":
        "8cdc572b8b21f814598f3e97a668d305bbf8fca12f81bf1a535666ea62c2d792",
    "mlflow.server.handlers:list_artifacts_impl":
        "a60dced8ab61f7d74f840fb3a1f2c5f13f1d67768cafd1a08ba50c626a72ceb5",
    "mlflow.server.handlers:_get_artifact_repo":
        "e055ce3c8489d7f3ba8af63bfa9f526a26f4c3dca4a1fc5a81fbb21b3a8d9d9e",
    "mlflow.store.tracking.sqlalchemy_store:SqlAlchemyStore.get_run":
        "bd060906b88f7c597e60e513440ea6d7ec686e5aba60e32173419ba5074ae381",
    "mlflow.store.tracking.sqlalchemy_store:SqlAlchemyStore._get_run":
        "bdb42651147d8265678a5186998efa59cdb976644bfd3d1bb442b531d2d43ca1",
}
#: The store methods a subclass may override to scope or check what is read (workspaces).
SCOPING = ("_get_query", "_validate_run_accessible", "get_metric_history",
           "get_metric_history_bulk_interval", "get_run", "_get_run")
DIALECTS = frozenset({"postgresql", "sqlite"})


def _plain(store: Any) -> bool:
    """MLflow's own SqlAlchemyStore on a database the fast paths were checked on."""
    base = STORE_TYPE.owner().SqlAlchemyStore
    kind = type(store)
    return isinstance(store, base) and store.db_type in DIALECTS and all(
        getattr(kind, name) is getattr(base, name) for name in SCOPING)


def _point(key: str, value: float, timestamp: int, step: int, is_nan: bool) -> dict[str, Any]:
    """Metric.to_proto of SqlMetric.to_mlflow_entity, as message_to_json's dict."""
    return {"key": key, "value": "NaN" if is_nan else json_double(value),
            "timestamp": timestamp, "step": step}


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


_FLOAT_TEXT = float.__repr__  # what json.dumps writes for a finite float


def points_text(key: str, rows: Iterable[Sequence[Any]], run_id: str | None = None) -> str:
    """``_point(key, *row)`` (and ``run_id``) for ``rows`` of (key, value, timestamp, step,
    is_nan), as ``_dump`` writes a list of them, without the list: the same bytes. Written
    directly because building the dicts and encoding them was two thirds of a 100-point
    history's Python time; a row whose types are not the database's usual ones (a float, two
    ints) goes through ``_dump``."""
    head = '{"key":' + json.dumps(key) + ',"value":'
    tail = "}" if run_id is None else ',"run_id":' + json.dumps(run_id) + "}"
    parts = []
    for row_key, value, timestamp, step, is_nan in rows:
        if (row_key == key and type(value) is float and type(timestamp) is int
                and type(step) is int):
            if is_nan:
                text = '"NaN"'
            elif value - value == 0:  # finite (inf - inf and NaN - NaN are NaN)
                text = _FLOAT_TEXT(value)
            else:
                text = json.dumps(json_double(value))
            parts.append(f'{head}{text},"timestamp":{timestamp},"step":{step}{tail}')
        else:
            point = _point(row_key, value, timestamp, step, is_nan)
            if run_id is not None:
                point["run_id"] = run_id
            parts.append(_dump(point))
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# metrics/get-history


@functools.cache
def _history_statement(paged: bool) -> Any:
    """SqlAlchemyStore.get_metric_history's query, built once: its values are bound at each
    call (building the ORM expression cost more than running it)."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric as M
    from sqlalchemy import bindparam, select

    statement: Any = (select(M.key, M.value, M.timestamp, M.step, M.is_nan)
                      .where(M.run_uuid == bindparam("run_id"), M.key == bindparam("key"))
                      .order_by(M.timestamp, M.step, M.value).offset(bindparam("offset")))
    return statement.limit(bindparam("limit")) if paged else statement


def history_json(store: Any, run_id: str, metric_key: str, max_results: int | None,
                 page_token: str | None) -> str:
    """The body of MLflow's ``metrics/get-history`` for these arguments."""
    from mlflow.utils.search_utils import SearchUtils as Untyped

    SearchUtils: Any = Untyped  # MLflow is untyped
    offset = SearchUtils.parse_start_offset_from_page_token(page_token)
    values: dict[str, Any] = {"run_id": run_id, "key": metric_key, "offset": offset}
    if max_results is not None:
        values["limit"] = max_results + 1
    with read_rows(store) as session:
        rows = fetch_all(session, _history_statement(max_results is not None), values,
                         named=False)
    token = None
    if max_results is not None and len(rows) == max_results + 1:
        token = SearchUtils.create_page_token(offset + max_results)
        rows = rows[:max_results]
    members = []
    if rows:
        members.append('"metrics":[' + points_text(metric_key, rows) + "]")
    if token:
        text = token.decode() if isinstance(token, bytes) else token
        members.append('"next_page_token":' + json.dumps(text))
    return "{" + ",".join(members) + "}"


def history_view(original: Callable[[], Any]) -> Callable[[], Any]:
    handlers = HISTORY.owner()
    from flask import Response
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.protos.service_pb2 import GetMetricHistory

    schema = {
        "run_id": [handlers._assert_string, handlers._assert_required],
        "metric_key": [handlers._assert_string, handlers._assert_required],
        "page_token": [handlers._assert_string],
    }

    @wrapping(original)
    def _get_metric_history() -> Any:
        store = handlers._get_tracking_store()
        if not _plain(store):
            return original()
        request_message = handlers._get_request_message(GetMetricHistory(), schema=schema)
        run_id = request_message.run_id or request_message.run_uuid
        max_results = request_message.max_results \
            if request_message.HasField("max_results") else None
        if max_results is not None and max_results <= 0:
            raise MlflowException(
                f"Invalid value {max_results} for parameter 'max_results' supplied. "
                "It must be a positive integer.",
                error_code=INVALID_PARAMETER_VALUE,
            )
        body = history_json(store, run_id, request_message.metric_key, max_results,
                            request_message.page_token or None)
        return Response(body, mimetype="application/json")

    return _as_mlflow_view(handlers, _get_metric_history)


# --------------------------------------------------------------------------------------------
# metrics/get-history-bulk-interval


def _sampling_statement(run_ids: list[str], metric_key: str, max_results: int,
                        start_step: int | None, end_step: int | None) -> Any:
    """MLflow's per-run sampling for all runs at once: NTILE buckets and the first row of each,
    partitioned by run, plus each run's last row (``from_end = 1``), ordered as MLflow orders."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric as M
    from sqlalchemy import func, or_, select

    filters = [M.run_uuid.in_(run_ids), M.key == metric_key]
    if start_step is not None and end_step is not None:
        filters += [M.step >= start_step, M.step <= end_step]
    order = [M.step, M.timestamp, M.value, M.is_nan]
    bucketed = select(
        M.run_uuid.label("run_uuid"), M.value.label("value"), M.timestamp.label("timestamp"),
        M.step.label("step"), M.is_nan.label("is_nan"),
        func.ntile(max_results).over(partition_by=M.run_uuid, order_by=order).label("bucket"),
        func.row_number().over(partition_by=M.run_uuid,
                               order_by=[column.desc() for column in order]).label("from_end"),
    ).where(*filters).subquery()
    b = bucketed.c
    ranked = select(
        b.run_uuid, b.value, b.timestamp, b.step, b.is_nan, b.from_end,
        func.row_number().over(partition_by=[b.run_uuid, b.bucket],
                               order_by=[b.step, b.timestamp, b.value, b.is_nan]).label("rn"),
    ).subquery()
    r = ranked.c
    return (select(r.run_uuid, r.value, r.timestamp, r.step, r.is_nan, r.rn, r.from_end)
            .where(or_(r.rn == 1, r.from_end == 1))
            .order_by(r.run_uuid, r.step, r.timestamp, r.value, r.is_nan))


def _sampled(rows: Iterable[Any], max_results: int) -> list[Any]:
    """One run's points as _sample_rows_with_window_functions keeps them."""
    kept: list[Any] = []
    last = None
    for row in rows:
        if row.rn == 1:
            kept.append(row)
        if row.from_end == 1:
            last = row

    def row_key(row: Any) -> tuple[Any, ...]:
        return (row.step, row.timestamp, None if row.is_nan else row.value, row.is_nan)

    if last is not None and (not kept or row_key(kept[-1]) != row_key(last)):
        if len(kept) >= max_results:
            kept[-1] = last
        else:
            kept.append(last)
    return kept


def bulk_interval_json(store: Any, run_ids: list[str], metric_key: str, max_results: int,
                       start_step: int | None, end_step: int | None) -> str:
    """The body of MLflow's ``metrics/get-history-bulk-interval`` for these arguments."""
    max_results = max(1, max_results)
    by_run: dict[str, list[Any]] = defaultdict(list)
    if run_ids:
        with read_rows(store) as session:
            statement = _sampling_statement(sorted(set(run_ids)), metric_key, max_results,
                                            start_step, end_step)
            for row in session.execute(statement):
                by_run[row.run_uuid].append(row)
    runs = []
    for run_id in run_ids:  # request order, repeats included, as MLflow's loop
        kept = _sampled(by_run.get(run_id, ()), max_results)
        if kept:
            runs.append(points_text(metric_key, [
                (metric_key, row.value, row.timestamp, row.step, row.is_nan) for row in kept],
                run_id))
    return '{"metrics":[' + ",".join(runs) + "]}" if runs else "{}"


def bulk_interval_view(original: Callable[[], Any]) -> Callable[[], Any]:
    handlers = BULK.owner()
    from flask import Response, request
    from mlflow.exceptions import MlflowException
    from mlflow.protos.service_pb2 import GetMetricHistoryBulkInterval

    most_runs = handlers.MAX_RUNS_GET_METRIC_HISTORY_BULK
    most_results = handlers.MAX_RESULTS_PER_RUN
    schema = {
        "run_ids": [
            handlers._assert_required, handlers._assert_array, handlers._assert_item_type_string,
            lambda x: handlers._assert_less_than_or_equal(
                len(x), most_runs,
                message=f"GetMetricHistoryBulkInterval request must specify at most "
                f"{most_runs} run_ids. Received {len(x)} run_ids."),
        ],
        "metric_key": [handlers._assert_required, handlers._assert_string],
        "start_step": [handlers._assert_intlike],
        "end_step": [handlers._assert_intlike],
        "max_results": [
            handlers._assert_intlike,
            lambda x: handlers._assert_intlike_within_range(
                int(x), 1, most_results,
                message=f"max_results must be between 1 and {most_results}."),
        ],
    }

    @wrapping(original)
    def get_metric_history_bulk_interval_handler() -> Any:
        store = handlers._get_tracking_store()
        if not _plain(store):
            return original()
        request_message = handlers._get_request_message(GetMetricHistoryBulkInterval(),
                                                        schema=schema)
        args = request.args
        max_results = int(args.get("max_results", most_results))
        start: Any = args.get("start_step")
        end: Any = args.get("end_step")
        if start is not None and end is not None:
            start, end = int(start), int(end)
            if start > end:
                raise MlflowException.invalid_parameter_value(
                    "end_step must be greater than start_step. "
                    f"Found start_step={start} and end_step={end}.")
        elif start is not None or end is not None:
            raise MlflowException.invalid_parameter_value(
                "If either start step or end step are specified, both must be specified.")
        body = bulk_interval_json(store, list(request_message.run_ids),
                                  request_message.metric_key, max_results, start, end)
        return Response(body, mimetype="application/json")

    return _as_mlflow_view(handlers, get_metric_history_bulk_interval_handler)


# --------------------------------------------------------------------------------------------
# artifacts/list


class _RunInfo:
    """What MLflow's listing reads of a run: its artifact location."""

    def __init__(self, artifact_uri: Any) -> None:
        self.artifact_uri = artifact_uri


class _Run:
    def __init__(self, artifact_uri: Any) -> None:
        self.info = _RunInfo(artifact_uri)


@functools.cache
def _location_statement() -> Any:
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from sqlalchemy import bindparam, select

    return select(SqlRun.artifact_uri).where(SqlRun.run_uuid == bindparam("run_id"))


def artifact_location(store: Any, run_id: str) -> _Run:
    """The run's artifact location, with SqlAlchemyStore._get_run's errors for a missing run."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_STATE, RESOURCE_DOES_NOT_EXIST

    with read_rows(store) as session:
        found = [row[0] for row in fetch_all(session, _location_statement(),
                                             {"run_id": run_id})]
    if not found:
        raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
    if len(found) > 1:
        raise MlflowException(f"Expected only 1 run with id={run_id}. Found {len(found)}.",
                              INVALID_STATE)
    return _Run(found[0])


def list_view(original: Callable[[], Any]) -> Callable[[], Any]:
    handlers = LIST.owner()
    from flask import Response
    from mlflow.protos.service_pb2 import ListArtifacts

    schema = {
        "run_id": [handlers._assert_string, handlers._assert_required],
        "path": [handlers._assert_string],
        "page_token": [handlers._assert_string],
    }

    @wrapping(original)
    def _list_artifacts() -> Any:
        store = handlers._get_tracking_store()
        if not _plain(store):
            return original()
        request_message = handlers._get_request_message(ListArtifacts(), schema=schema)
        response_message = ListArtifacts.Response()
        path = handlers.validate_path_is_safe(request_message.path) \
            if request_message.HasField("path") else None
        run = artifact_location(store, request_message.run_id or request_message.run_uuid)
        if handlers._is_servable_proxied_run_artifact_root(run.info.artifact_uri):
            entities = handlers._list_artifacts_for_proxied_run_artifact_root(
                proxied_artifact_root=run.info.artifact_uri, relative_path=path)
        else:
            entities = handlers._get_artifact_repo(run).list_artifacts(path)
        response_message.files.extend([entity.to_proto() for entity in entities])
        response_message.root_uri = run.info.artifact_uri
        return Response(handlers.message_to_json(response_message),
                        mimetype="application/json")

    return _as_mlflow_view(handlers, _list_artifacts)


# --------------------------------------------------------------------------------------------
# Installing


def _as_mlflow_view(handlers: Any, view: Callable[[], Any]) -> Callable[[], Any]:
    """Wrapped as MLflow wraps these views: its error JSON, and off on an artifacts-only
    server."""
    wrapped: Callable[[], Any] = handlers.catch_mlflow_exception(
        handlers._disable_if_artifacts_only(view))
    setattr(wrapped, "fast_reads", True)  # noqa: B010  (a marker on a function)
    return wrapped


#: Flask endpoint names -> (the fast view's maker, what it mirrors). The UI's bulk-interval
#: route is its own endpoint that calls MLflow's handler by name: both are replaced.
VIEWS: dict[str, tuple[Callable[[Callable[[], Any]], Callable[[], Any]], dict[str, str]]] = {
    HISTORY.name: (history_view, HISTORY_PINS),
    BULK.name: (bulk_interval_view, BULK_PINS),
    UI_BULK.name: (bulk_interval_view, BULK_PINS),
    LIST.name: (list_view, LIST_PINS),
}


def changed_upstream() -> list[str]:
    """Every mirrored function whose source is not the one these views were checked against."""
    return changed({**HISTORY_PINS, **BULK_PINS, **LIST_PINS})


def install(flask_app: Any) -> list[str]:
    """Put the fast views on ``flask_app`` (idempotent); the endpoints now served by them.
    A view whose mirrored functions changed is left MLflow's, with a warning."""
    installed = []
    checked: dict[int, list[str]] = {}
    for endpoint, (make, pins) in VIEWS.items():
        original = flask_app.view_functions[endpoint]
        if getattr(original, "fast_reads", False):
            installed.append(endpoint)
            continue
        differs = checked.setdefault(id(pins), changed(pins))
        if differs:
            log.warning("%s: MLflow's own view (these changed since the fast path was "
                        "checked: %s)", endpoint, ", ".join(differs))
            continue
        flask_app.view_functions[endpoint] = make(original)
        installed.append(endpoint)
    return installed


def apply(app: Any = None) -> None:
    """On MLflow's Flask app, which both the SSO app and the app without SSO serve."""
    for shape in UPSTREAM:
        shape.require()
    from mlflow.server import app as flask_app

    install(flask_app)
