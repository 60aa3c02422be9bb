"""``runs/search`` answered from rows, without ORM entities or protobufs (speed; the same JSON).

The experiment page calls ``runs/search`` for 100 runs at a time. MLflow loads them as ORM
objects with their latest metrics, params and tags (~4,100 rows), turns each into an entity,
then a protobuf, then a dict, then JSON: on a year of a team's data (bench/scale.py) ~53 ms of
a ~75 ms call was that bookkeeping and ~20 ms the JSON, against ~12 ms of SQL.

Here the view behind both routes (``/api/2.0/mlflow/runs/search`` and its ``/ajax-api`` twin)
keeps everything that decides *which* runs come back as MLflow has it: its request parsing and
validation, its filter and order-by clauses, experiment scoping (``_filter_experiment_ids``,
workspaces included), pagination tokens, and the ``DISTINCT ... ORDER BY ... OFFSET ... LIMIT``
statement itself, minus the eager loads. What the runs *contain* is then read with one plain
query per table (latest metrics, params, tags: what MLflow's eager loads read) and written as
the dict ``message_to_json`` would produce (same fields, same presence rules, int64 as numbers,
``NaN``/``Infinity`` as strings), dumped compactly. Dataset inputs and model outputs, rare and
nested, still go through MLflow's own entities and protobufs.

Anything unusual, where MLflow would fail or behave in a way not mirrored here (a run without
a user or start time, an unknown status, a store that overrides the search), is answered by
MLflow's own view. So is everything when MLflow's mirrored functions are not the ones this
module was checked against (``MIRRORED``: source digests of the pinned MLflow):
tests/server/patches/test_fast_runs_search.py compares both views' answers on real
PostgreSQL, and a new MLflow version needs that test before the digests are renewed. Nothing is
cached: every call reads the database.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from mlflow_stack.server.guards import Shape, wrapping
from mlflow_stack.server.mirrors import Unusual, changed, json_double, resolve

log = logging.getLogger(__name__)

STORE = "mlflow.store.tracking.sqlalchemy_store"
HANDLERS = "mlflow.server.handlers"
VIEW = Shape(HANDLERS, "_search_runs", ())
STORE_TYPE = Shape(STORE, "SqlAlchemyStore")
FILTERS = Shape(STORE, "_get_sqlalchemy_filter_clauses", ("parsed", "session", "dialect"))
ORDER = Shape(STORE, "_get_orderby_clauses", ("order_by_list", "session"))
EXPERIMENT_IDS = Shape(STORE, "_parse_experiment_ids", ("experiment_ids",))
SCOPE = Shape(STORE, "SqlAlchemyStore._filter_experiment_ids",
              ("self", "session", "experiment_ids", "lifecycle_stage"))
INPUTS = Shape(STORE, "SqlAlchemyStore._get_run_inputs", ("self", "session", "run_uuids"))
OUTPUTS = Shape(STORE, "SqlAlchemyStore._get_model_outputs_bulk", ("self", "run_ids", "session"))
REQUEST = Shape(HANDLERS, "_get_request_message", ("request_message", "flask_request", "schema"))
UPSTREAM = (VIEW, STORE_TYPE, FILTERS, ORDER, EXPERIMENT_IDS, SCOPE, INPUTS, OUTPUTS, REQUEST)

#: What this module mirrors, by SHA-256 of its source in the pinned MLflow. Another digest
#: (another MLflow) leaves the fast path off: MLflow's own view answers.
MIRRORED: dict[str, str] = {
    "mlflow.server.handlers:_search_runs":
        "7549b2693d063100624715f0b62a0898f084d7d1dd4a5e62465c0dc4aaed7964",
    "mlflow.server.handlers:search_runs_impl":
        "8df9382dd1bbac29ed13b2211ab6a6de5acaf17a2f9694846975a825f0a2988f",
    "mlflow.store.tracking.sqlalchemy_store:SqlAlchemyStore._search_runs":
        "5235efb440f86762c07045c1207c96c1ce172937d4299d8ad24036aab405a7b7",
    "mlflow.store.tracking.abstract_store:AbstractStore.search_runs":
        "e7a1699ef73ed6e18271b0a5c7caa3c2f57773ac8505acce1eedda4bae81946c",
    "mlflow.store.tracking.dbmodels.models:SqlRun.to_mlflow_entity":
        "dd189709d05fa35f2f5eacded73f1b8c9b062e8a8d8797ea7ffd23654234b81e",
    "mlflow.store.tracking.dbmodels.models:SqlLatestMetric.to_mlflow_entity":
        "ed77c08f03d747e1b2a61241f42507965d195618656f851acdae504cc8afd208",
    "mlflow.entities.run:Run.to_proto":
        "71cea2026e5b32ed064334d8da7125e802d8f0e64e34d285364333f5d679cc65",
    "mlflow.entities.run_info:RunInfo.to_proto":
        "baedf9ddbc58edfb925c4fd88805eb740f775963986f13f44989cf7e58eb958a",
    "mlflow.entities.run_data:RunData.to_proto":
        "853a337486823735e2b89bf82c67490e0e45e21222389730bb2ea339a31df408",
    "mlflow.entities.metric:Metric.to_proto":
        "fd40b900b388c6d9f79d7241b94742697d5b58af0ba17ae23537f5060389a8d9",
}

#: MLflow's request schema for SearchRuns (handlers._search_runs), by the same validators.
SCHEMA_FIELDS = ("experiment_ids", "filter", "max_results", "order_by")
RUN_STATUSES = frozenset({"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"})
RUN_NAME_TAG = "mlflow.runName"


def changed_upstream() -> list[str]:
    """The mirrored functions whose source is not the one this module was checked against."""
    return changed(MIRRORED)


# --------------------------------------------------------------------------------------------
# Which runs: MLflow's statement without its eager loads


def _select_runs(store: Any, session: Any, experiment_ids: list[str], filter_string: str,
                 run_view_type: int, max_results: int | None, order_by: list[str],
                 page_token: str | None) -> tuple[list[Any], bytes | str | None]:
    """The SqlRun rows of the page and the next page's token, as SqlAlchemyStore._search_runs
    selects them (same clauses, same order, same token)."""
    from mlflow.entities.lifecycle_stage import LifecycleStage
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from mlflow.utils.search_utils import SearchUtils as Untyped
    from sqlalchemy import select

    SearchUtils: Any = Untyped  # MLflow is untyped
    store_module = STORE_TYPE.owner()
    store._validate_max_results_param(max_results, allow_null=True)
    stages = set(LifecycleStage.view_type_to_stages(run_view_type))
    parsed_filters = SearchUtils.parse_search_filter(filter_string)
    cases_orderby, parsed_orderby, sorting_joins = store_module._get_orderby_clauses(
        order_by, session)
    stmt = select(SqlRun, *cases_orderby)
    attribute_filters, non_attribute_filters, dataset_filters = \
        store_module._get_sqlalchemy_filter_clauses(parsed_filters, session, store._get_dialect())
    for non_attr_filter in non_attribute_filters:
        stmt = stmt.join(non_attr_filter)
    for dataset_filter in dataset_filters:
        stmt = stmt.join(dataset_filter, SqlRun.run_uuid == dataset_filter.c.destination_id)
    for join in sorting_joins:
        stmt = stmt.outerjoin(join)
    offset = SearchUtils.parse_start_offset_from_page_token(page_token)
    scoped = store._filter_experiment_ids(session, store_module._parse_experiment_ids(
        experiment_ids))
    stmt = (stmt.distinct()
            .filter(SqlRun.experiment_id.in_(scoped), SqlRun.lifecycle_stage.in_(stages),
                    *attribute_filters)
            .order_by(*parsed_orderby)
            .offset(offset))
    if max_results is not None:
        stmt = stmt.limit(max_results + 1)
    runs = list(session.execute(stmt).scalars(SqlRun).all())
    token = None
    if max_results is not None and len(runs) == max_results + 1:
        token = SearchUtils.create_page_token(offset + max_results)
        runs = runs[:max_results]
    return runs, token


# --------------------------------------------------------------------------------------------
# What they contain: one query per table, straight to message_to_json's dict


def _by_run(rows: Iterable[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row[0]].append(row)
    return grouped


def _contents(session: Any, run_ids: list[str]) -> tuple[dict[str, list[Any]], ...]:
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlTag
    from sqlalchemy import select

    if not run_ids:
        return {}, {}, {}
    metric = SqlLatestMetric
    metrics = session.execute(
        select(metric.run_uuid, metric.key, metric.value, metric.timestamp, metric.step,
               metric.is_nan).where(metric.run_uuid.in_(run_ids)))
    params = session.execute(
        select(SqlParam.run_uuid, SqlParam.key, SqlParam.value)
        .where(SqlParam.run_uuid.in_(run_ids)))
    tags = session.execute(
        select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).where(SqlTag.run_uuid.in_(run_ids)))
    return _by_run(metrics), _by_run(params), _by_run(tags)


def _metric(row: Any) -> dict[str, Any]:
    _, key, value, timestamp, step, is_nan = row
    if key is None or value is None or timestamp is None or step is None:
        raise Unusual("metric with a null column")
    return {"key": key, "value": "NaN" if is_nan else json_double(value), "timestamp": timestamp,
            "step": step}


def _pairs(rows: list[Any]) -> dict[str, Any]:
    """Keys to values, as RunData keeps them (a dict: one value per key, first-seen order)."""
    pairs: dict[str, Any] = {}
    for _, key, value in rows:
        if key is None:
            raise Unusual("param or tag without a key")
        pairs[key] = value
    return pairs


def _key_values(pairs: dict[str, Any]) -> list[dict[str, Any]]:
    # A proto field set to None stays unset: the JSON has no "value" then.
    return [{"key": key} if value is None else {"key": key, "value": value}
            for key, value in pairs.items()]


class RunRow(NamedTuple):
    """The runs columns a search answer carries."""

    run_uuid: str
    name: str | None
    experiment_id: int | None
    user_id: str | None
    status: str | None
    start_time: int | None
    end_time: int | None
    artifact_uri: str | None
    lifecycle_stage: str | None


def _info(run: RunRow, tags: dict[str, Any]) -> dict[str, Any]:
    """RunInfo.to_proto's fields, in field-number order, with its presence rules."""
    if run.user_id is None or run.start_time is None or run.lifecycle_stage is None \
            or run.status not in RUN_STATUSES or run.experiment_id is None:
        raise Unusual("a run MLflow itself cannot serialize")
    name = run.name
    if not name and tags.get(RUN_NAME_TAG):
        name = tags[RUN_NAME_TAG]
    info: dict[str, Any] = {"run_uuid": run.run_uuid, "experiment_id": str(run.experiment_id)}
    if name is not None:
        info["run_name"] = name
    info.update(user_id=run.user_id, status=run.status, start_time=run.start_time)
    if run.end_time:
        info["end_time"] = run.end_time
    if run.artifact_uri:
        info["artifact_uri"] = run.artifact_uri
    info.update(lifecycle_stage=run.lifecycle_stage, run_id=run.run_uuid)
    return info


def _message(entity: Any) -> dict[str, Any]:
    from mlflow.utils.proto_json_utils import message_to_json

    result: dict[str, Any] = json.loads(message_to_json(entity.to_proto(), pretty=False))
    return result


def runs_json(store: Any, experiment_ids: list[str], filter_string: str, run_view_type: int,
              max_results: int | None, order_by: list[str], page_token: str | None) -> str:
    """The body MLflow's ``runs/search`` answers for these arguments (Unusual: let MLflow)."""
    from mlflow.entities import RunInputs, RunOutputs

    # Everything is read inside the session and written outside it: MLflow's managed session
    # turns any exception in its block into an INTERNAL_ERROR, Unusual included.
    with store.ManagedSessionMaker() as session:
        rows, token = _select_runs(store, session, experiment_ids, filter_string, run_view_type,
                                   max_results, order_by, page_token)
        runs = [RunRow(run.run_uuid, run.name, run.experiment_id, run.user_id, run.status,
                       run.start_time, run.end_time, run.artifact_uri, run.lifecycle_stage)
                for run in rows]
        run_ids = [run.run_uuid for run in runs]
        metrics, params, tags = _contents(session, run_ids)
        inputs = store._get_run_inputs(session=session, run_uuids=run_ids) if run_ids else []
        outputs = store._get_model_outputs_bulk(run_ids=run_ids, session=session) \
            if run_ids else {}
    found = []
    for index, run in enumerate(runs):
        run_tags = _pairs(tags.get(run.run_uuid, []))
        data: dict[str, Any] = {}
        if run.run_uuid in metrics:
            data["metrics"] = [_metric(row) for row in metrics[run.run_uuid]]
        if run.run_uuid in params:
            data["params"] = _key_values(_pairs(params[run.run_uuid]))
        if run_tags:
            data["tags"] = _key_values(run_tags)
        dataset_inputs = inputs[index]
        model_outputs = outputs[run.run_uuid]
        found.append({
            "info": _info(run, run_tags),
            "data": data,
            "inputs": _message(RunInputs(dataset_inputs=dataset_inputs))
            if dataset_inputs else {},
            "outputs": _message(RunOutputs(model_outputs)) if model_outputs else {},
        })
    body: dict[str, Any] = {"runs": found} if found else {}
    if token:  # bytes from SearchUtils; the proto string field decodes them
        body["next_page_token"] = token.decode() if isinstance(token, bytes) else token
    return json.dumps(body, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# The view


def fast_view(original: Callable[[], Any]) -> Callable[[], Any]:
    """The ``runs/search`` view: rows to JSON, or ``original`` (MLflow's view) when unusual."""
    handlers = VIEW.owner()
    from flask import Response
    from mlflow.entities import ViewType
    from mlflow.protos.service_pb2 import SearchRuns

    schema = {
        "experiment_ids": [handlers._assert_array],
        "filter": [handlers._assert_string],
        "max_results": [handlers._assert_intlike,
                        lambda x: handlers._assert_less_than_or_equal(int(x), 50000)],
        "order_by": [handlers._assert_array, handlers._assert_item_type_string],
    }
    store_type = STORE_TYPE.owner().SqlAlchemyStore
    search_runs = resolve("mlflow.store.tracking.abstract_store:AbstractStore.search_runs")

    @wrapping(original)
    def _search_runs() -> Any:
        store = handlers._get_tracking_store()
        kind = type(store)
        if not isinstance(store, store_type) \
                or kind._search_runs is not store_type._search_runs \
                or getattr(kind.search_runs, "__wrapped__", kind.search_runs) is not search_runs:
            return original()
        request_message = handlers._get_request_message(SearchRuns(), schema=schema)
        run_view_type = ViewType.ACTIVE_ONLY
        if request_message.HasField("run_view_type"):
            run_view_type = ViewType.from_proto(request_message.run_view_type)
        experiment_ids = list(request_message.experiment_ids)
        try:
            from mlflow.server import auth

            if auth.auth_config:
                experiment_ids = auth.filter_experiment_ids(experiment_ids)
        except ImportError:
            pass  # as MLflow: its auth module needs Flask-WTF
        try:
            body = runs_json(store, experiment_ids, request_message.filter, run_view_type,
                             request_message.max_results, list(request_message.order_by),
                             request_message.page_token or None)
        except Unusual as why:
            log.debug("runs/search answered by MLflow's own view: %s", why)
            return original()
        response = Response(mimetype="application/json")
        response.set_data(body)
        return response

    view: Callable[[], Any] = handlers.catch_mlflow_exception(
        handlers._disable_if_artifacts_only(_search_runs))
    return view


def install(flask_app: Any) -> bool:
    """Put the fast view behind ``runs/search`` on ``flask_app`` (idempotent). False, with
    MLflow's view left in place, when a mirrored function changed."""
    original = flask_app.view_functions[VIEW.name]
    if getattr(original, "fast_runs_search", False):
        return True
    changed = changed_upstream()
    if changed:
        log.warning("runs/search: MLflow's own view (these changed since the fast path was "
                    "checked: %s)", ", ".join(changed))
        return False
    view = fast_view(original)
    setattr(view, "fast_runs_search", True)  # noqa: B010  (a marker on a function)
    flask_app.view_functions[VIEW.name] = view
    return True


def apply(app: Any = None) -> None:
    """On MLflow's Flask app, which both the SSO app and the app without SSO serve."""
    for shape in UPSTREAM:
        shape.require()
    from mlflow.server import app as flask_app

    install(flask_app)
