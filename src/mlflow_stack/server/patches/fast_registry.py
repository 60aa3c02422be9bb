"""Registry searches read from rows, not ORM relationships (speed; the same entities).

The models page and a model's page call ``registered-models/search`` and
``model-versions/search``. MLflow's registry store loads every model, its tags and aliases,
each model's latest version per stage and those versions' tags as ORM objects through eager
"subquery" loads, then builds entities from them: on bench/scale.py's registry (30 models, 10
versions each) ~70 % of a ~18 ms call was SQLAlchemy populating objects, against ~3 ms of SQL.

Here the store methods keep MLflow's choice of *what* comes back (its filter parsing and
validation, its filter and order-by clauses, prompts excluded, workspace clauses, its paging
and tokens, its window query for the latest version per stage) and read the rows those
eager loads would read (tags, aliases, latest versions) as plain column rows, one statement
each, then call MLflow's entity constructors with exactly what ``to_mlflow_entity`` passes.
The entities go on to MLflow's ``to_proto`` and JSON unchanged, so the answer cannot differ
in form. What MLflow leaves unordered (a model's tags, aliases and latest versions) may come
in another order. A subclass of the store (a workspace-aware one) and a mirrored function
whose source changed (``mirrors.changed``) keep MLflow's methods. No rows are cached: every
call reads the database. What is kept is statements: the fixed ones (latest versions, tags,
aliases) are built once with their values bound per call, and MLflow's statement for a search
is kept per store, workspace and arguments (the last 256): building them cost more than
running them.
tests/server/patches/test_fast_registry.py compares both on real PostgreSQL and SQLite.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, select

from mlflow_stack.server.driver_rows import any_in, arrays, fetch_all
from mlflow_stack.server.guards import Shape, wrapping
from mlflow_stack.server.mirrors import changed, read_rows

log = logging.getLogger(__name__)

STORE = "mlflow.store.model_registry.sqlalchemy_store"
MODELS = Shape(STORE, "SqlAlchemyStore.search_registered_models",
               ("self", "filter_string", "max_results", "order_by", "page_token"))
VERSIONS = Shape(STORE, "SqlAlchemyStore.search_model_versions",
                 ("self", "filter_string", "max_results", "order_by", "page_token"))
LATEST = Shape(STORE, "SqlAlchemyStore._get_latest_versions_for_models",
               ("self", "session", "model_names"))
WORKSPACE = Shape(STORE, "SqlAlchemyStore._get_workspace_clauses", ("self", "model"))
UPSTREAM = (MODELS, VERSIONS, LATEST, WORKSPACE)

_ENTITIES = {
    # The statements bind the workspace these choose; the search's is built without a session.
    "mlflow.store.model_registry.sqlalchemy_store:SqlAlchemyStore._get_workspace_clauses":
        "87d556a923c8fbdad931c8cc8024118890bab2726d7e14d7930e3fb6e6585e88",
    "mlflow.store.model_registry.sqlalchemy_store:SqlAlchemyStore."
    "_get_search_registered_model_filter_query":
        "801b2e20d6db46272ba6738d2413a10c0547876703b05973bc13a9702cfebf54",
    "mlflow.store.model_registry.dbmodels.models:SqlModelVersion.to_mlflow_entity":
        "919a029f1286c6e1ae7cf67ed1ea194be29c781f2ba5e74aa837b17540aa0298",
    "mlflow.store.model_registry.dbmodels.models:SqlRegisteredModel.to_mlflow_entity":
        "6d0eb4f7247d3da222ec0e085924f271dd441da82c4b7de2bd2faeb946fb83f7",
    "mlflow.store.model_registry.dbmodels.models:SqlModelVersionTag.to_mlflow_entity":
        "8239e107a944d129545667fbc2fc08195717f6e54158648dc392a48495c42b62",
    "mlflow.store.model_registry.dbmodels.models:SqlRegisteredModelTag.to_mlflow_entity":
        "d01419f895d86a0cf370d4edf8354ab9d67948ac321aef364ff5282c7d439a20",
    "mlflow.store.model_registry.dbmodels.models:SqlRegisteredModelAlias.to_mlflow_entity":
        "51f74d267a0646e6175a3531d2d1c08f61ed86b69c43155c06106e0541d5df9e",
}
#: What each method mirrors, by SHA-256 of the source in the pinned MLflow.
MODELS_PINS: dict[str, str] = {
    "mlflow.store.model_registry.sqlalchemy_store:SqlAlchemyStore.search_registered_models":
        "dfaad31387fe838de664935220ed0587887eeff81f45b1678d17edc1e65b7424",
    "mlflow.store.model_registry.sqlalchemy_store:SqlAlchemyStore."
    "_get_latest_versions_for_models":
        "82a2a0eb5be598c3556de2ff2c2bb52b1e8457c4f8fc2d45b57feb363f4584b6",
    "mlflow.store.model_registry.sqlalchemy_store:SqlAlchemyStore."
    "_get_eager_registered_model_query_options":
        "5d036e14ac7ed3ece0ec4f9063c63e32e158ff9d8674a4586a7b5b23dc9d3c96",
    "mlflow.store.model_registry.sqlalchemy_store:SqlAlchemyStore."
    "_get_eager_model_version_query_options":
        "579b9ba7d5cb260a6095b765b755542e0a26b878a808fa1c518e11be0e37444b",
    **_ENTITIES,
}
VERSIONS_PINS: dict[str, str] = {
    "mlflow.store.model_registry.sqlalchemy_store:SqlAlchemyStore.search_model_versions":
        "7ccd0431e8d647a54b77ec321014d76a3f0faf9ecf64ae0f490b51fa6216ce4c",
    "mlflow.store.model_registry.sqlalchemy_store:SqlAlchemyStore."
    "_get_eager_model_version_query_options":
        "579b9ba7d5cb260a6095b765b755542e0a26b878a808fa1c518e11be0e37444b",
    **_ENTITIES,
}


def _base() -> Any:
    return MODELS.owner()


def _as_columns(query: Any, model: Any) -> Any:
    """MLflow's ORM select of ``model`` as a select of its columns (same FROMs, joins, filters,
    order and limit): rows with the columns by name, no ORM objects; runs on a plain
    connection too."""
    return query.with_only_columns(*model.__table__.columns, maintain_column_froms=True)


def _module() -> Any:
    import importlib

    return importlib.import_module(STORE)


def _workspace(store: Any, model: Any) -> str | None:
    """The workspace MLflow's ``_get_workspace_clauses`` filters ``model`` on, or None."""
    return store._get_active_workspace() if model in _module()._WORKSPACE_MODELS else None


# The statements below are built once per shape and run with their values bound: building
# an ORM expression cost more than running it (bench/scale.py: ~0.3 ms a statement).


@functools.cache
def _version_tags_statement(as_arrays: bool) -> Any:
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersionTag as T

    # IN lists per column, not a tuple IN: a few parameters (the driver's statement
    # preparation grows with them), then only the versions asked for are kept.
    return (select(T.workspace, T.name, T.version, T.key, T.value)
            .where(any_in(T.workspace, "workspaces", as_arrays),
                   any_in(T.name, "names", as_arrays), any_in(T.version, "versions", as_arrays)))


def _version_tags(session: Any, versions: list[Any]) -> dict[tuple[Any, ...], list[Any]]:
    """(workspace, name, version) -> its ModelVersionTag entities (the eager load's rows)."""
    found: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    keys = {(v.workspace, v.name, v.version) for v in versions}
    if keys:
        rows = fetch_all(session, _version_tags_statement(arrays(session)), {
            "workspaces": list({k[0] for k in keys}), "names": list({k[1] for k in keys}),
            "versions": list({k[2] for k in keys})})
        for workspace, name, version, key, value in rows:
            if (workspace, name, version) in keys:
                found[(workspace, name, version)].append(_version_tag(key, value))
    return found


def _version_tag(key: str, value: str | None) -> Any:
    from mlflow.entities import model_registry

    ModelVersionTag: Any = model_registry.ModelVersionTag  # MLflow is untyped
    return ModelVersionTag(key, value)


def _version(row: Any, tags: list[Any]) -> Any:
    """SqlModelVersion.to_mlflow_entity with the row's columns and the loaded tags."""
    from mlflow.entities.model_registry import ModelVersion

    return ModelVersion(
        row.name,
        row.version,
        row.creation_time,
        row.last_updated_time,
        row.description,
        row.user_id,
        row.current_stage,
        row.source,
        row.run_id,
        row.status,
        row.status_message,
        tags,
        row.run_link,
        [],
        workspace=row.workspace,
    )


def _versions(store: Any, session: Any, rows: list[Any]) -> list[Any]:
    tags = _version_tags(session, rows)
    return [_version(row, tags.get((row.workspace, row.name, row.version), [])) for row in rows]


@functools.cache
def _latest_statement(scoped: bool, as_arrays: bool) -> Any:
    """_get_latest_versions_for_models's window query, the versions' tags joined to it (a
    version without tags: one row of NULLs)."""
    import sqlalchemy
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion as MV
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersionTag as T

    # MLflow's workspace clauses, with the workspace bound at each call.
    workspace_clauses = [MV.workspace == bindparam("workspace")] if scoped else []
    row_num = sqlalchemy.func.row_number().over(
        partition_by=[MV.workspace, MV.name, MV.current_stage],
        order_by=MV.version.desc()).label("rn")
    subquery = (select(MV.workspace, MV.name, MV.version, row_num)
                .where(*workspace_clauses, any_in(MV.name, "names", as_arrays),
                       MV.current_stage != _module().STAGE_DELETED_INTERNAL)
                .subquery())
    return (select(*MV.__table__.columns, T.key.label("tag_key"), T.value.label("tag_value"))
            .where(*workspace_clauses)
            .join(subquery, sqlalchemy.and_(MV.workspace == subquery.c.workspace,
                                            MV.name == subquery.c.name,
                                            MV.version == subquery.c.version))
            .outerjoin(T, sqlalchemy.and_(T.workspace == MV.workspace, T.name == MV.name,
                                          T.version == MV.version))
            .where(subquery.c.rn == 1))


def _latest_versions(store: Any, session: Any, model_names: list[str]) -> dict[str, list[Any]]:
    """_get_latest_versions_for_models, as column rows turned into entities."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion as MV

    if not model_names:
        return {}
    workspace = _workspace(store, MV)
    values: dict[str, Any] = {"names": model_names}
    if workspace is not None:
        values["workspace"] = workspace
    rows = fetch_all(session, _latest_statement(workspace is not None, arrays(session)), values)
    versions: dict[tuple[Any, ...], tuple[Any, list[Any]]] = {}
    for row in rows:
        _, tags = versions.setdefault((row.workspace, row.name, row.version), (row, []))
        if row.tag_key is not None:
            tags.append(_version_tag(row.tag_key, row.tag_value))
    result: dict[str, list[Any]] = {name: [] for name in model_names}
    for row, tags in versions.values():
        result[row.name].append(_version(row, tags))
    return result


@functools.cache
def _children_statement(as_arrays: bool) -> Any:
    """The models' tags and aliases in one statement: (is_alias, workspace, name, key or
    alias, tag value, alias version)."""
    from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModelAlias as A
    from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModelTag as T
    from sqlalchemy import Integer, String, cast, false, null, true, union_all

    return union_all(
        select(false().label("is_alias"), T.workspace, T.name, T.key, T.value,
               cast(null(), Integer).label("version"))
        .where(any_in(T.workspace, "workspaces", as_arrays), any_in(T.name, "names", as_arrays)),
        select(true(), A.workspace, A.name, A.alias, cast(null(), String), A.version)
        .where(any_in(A.workspace, "workspaces", as_arrays), any_in(A.name, "names", as_arrays)))


def _model_children(session: Any, models: list[Any]) -> tuple[dict[Any, list[Any]], ...]:
    """(workspace, name) -> tags, and -> aliases, of these models (the eager loads' rows)."""
    from mlflow.entities import model_registry

    RegisteredModelTag: Any = model_registry.RegisteredModelTag  # MLflow is untyped
    RegisteredModelAlias: Any = model_registry.RegisteredModelAlias
    tags: dict[Any, list[Any]] = defaultdict(list)
    aliases: dict[Any, list[Any]] = defaultdict(list)
    keys = {(m.workspace, m.name) for m in models}
    if keys:
        rows = fetch_all(session, _children_statement(arrays(session)), {
            "workspaces": list({k[0] for k in keys}), "names": list({k[1] for k in keys})})
        for is_alias, workspace, name, key, value, version in rows:
            if (workspace, name) not in keys:
                continue
            if is_alias:
                aliases[(workspace, name)].append(RegisteredModelAlias(key, version))
            else:
                tags[(workspace, name)].append(RegisteredModelTag(key, value))
    return tags, aliases


def _check_max_results(max_results: Any, threshold: int, *, positive: bool) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    if positive and (not isinstance(max_results, int) or max_results < 1):
        raise MlflowException(
            "Invalid value for max_results. It must be a positive integer,"
            f" but got {max_results}",
            INVALID_PARAMETER_VALUE,
        )
    if max_results > threshold:
        raise MlflowException(
            "Invalid value for request parameter max_results. It must be at most "
            f"{threshold}, but got value {max_results}",
            INVALID_PARAMETER_VALUE,
        )


def _hashable(order_by: Any) -> Any:
    """``order_by`` as a cache key: MLflow's handlers pass a protobuf repeated field."""
    return order_by if order_by is None or isinstance(order_by, str) else tuple(order_by)


# MLflow's statement for a search, built by MLflow's own code, kept per (store, workspace,
# arguments): the same arguments build the same statement (it holds the values it binds, not
# rows), and building it cost more than running it. Errors are raised, not kept.
_QUERIES = 256


@functools.lru_cache(maxsize=_QUERIES)
def _versions_query(store: Any, workspace: str, filter_string: Any, order_by: Any,
                    page_token: Any, limit: int) -> tuple[Any, int]:
    """search_model_versions's statement (its columns) and offset, by MLflow's code."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion as MV
    from mlflow.utils import search_utils

    utils: Any = search_utils  # MLflow is untyped
    parsed_filters = utils.SearchModelVersionUtils.parse_search_filter(filter_string)
    filter_query = store._get_search_model_versions_filter_clauses(
        parsed_filters, store.engine.dialect.name)
    parsed_orderby = store._parse_search_model_versions_order_by(
        order_by or ["last_updated_timestamp DESC", "name ASC", "version_number DESC"])
    offset = utils.SearchUtils.parse_start_offset_from_page_token(page_token)
    query = (filter_query
             .filter(MV.current_stage != _module().STAGE_DELETED_INTERNAL)
             .order_by(*parsed_orderby)
             .limit(limit))
    if page_token:
        query = query.offset(offset)
    return _as_columns(query, MV), offset


@functools.lru_cache(maxsize=_QUERIES)
def _models_query(store: Any, workspace: str, filter_string: Any, order_by: Any,
                  page_token: Any, limit: int) -> tuple[Any, int]:
    """search_registered_models's statement (its columns) and offset, by MLflow's code."""
    from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModel as RM
    from mlflow.utils import search_utils

    utils: Any = search_utils  # MLflow is untyped
    parsed_filters = utils.SearchModelUtils.parse_search_filter(filter_string)
    parsed_orderby = store._parse_search_registered_models_order_by(order_by)
    offset = utils.SearchUtils.parse_start_offset_from_page_token(page_token)
    # MLflow passes its session here; the statement is built without using it.
    filter_query = store._get_search_registered_model_filter_query(
        None, parsed_filters, store.engine.dialect.name)
    query = filter_query.order_by(*parsed_orderby).limit(limit)
    if page_token:
        query = query.offset(offset)
    return _as_columns(query, RM), offset


def search_model_versions(original: Callable[..., Any]) -> Callable[..., Any]:
    module = _module()
    base = _base()

    @wrapping(original)
    def fast(self: Any, filter_string: Any = None,
             max_results: Any = module.SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT,
             order_by: Any = None, page_token: Any = None) -> Any:
        if type(self) is not base:
            return original(self, filter_string, max_results, order_by, page_token)
        from mlflow.store.entities.paged_list import PagedList

        _check_max_results(max_results, module.SEARCH_MODEL_VERSION_MAX_RESULTS_THRESHOLD,
                           positive=True)
        max_results_for_query = max_results + 1
        query, offset = _versions_query(self, self._get_active_workspace(), filter_string,
                                        _hashable(order_by), page_token, max_results_for_query)
        with read_rows(self) as session:
            rows = fetch_all(session, query)
            next_page_token = self._compute_next_token(
                max_results_for_query, len(rows), offset, max_results)
            versions = _versions(self, session, list(rows)[:max_results])
        return PagedList(versions, next_page_token)

    return fast


def search_registered_models(original: Callable[..., Any]) -> Callable[..., Any]:
    module = _module()
    base = _base()

    @wrapping(original)
    def fast(self: Any, filter_string: Any = None,
             max_results: Any = module.SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT,
             order_by: Any = None, page_token: Any = None) -> Any:
        if type(self) is not base:
            return original(self, filter_string, max_results, order_by, page_token)
        from mlflow.entities.model_registry import RegisteredModel
        from mlflow.store.entities.paged_list import PagedList

        _check_max_results(max_results, module.SEARCH_REGISTERED_MODEL_MAX_RESULTS_THRESHOLD,
                           positive=False)
        max_results_for_query = max_results + 1
        query, offset = _models_query(self, self._get_active_workspace(), filter_string,
                                      _hashable(order_by), page_token, max_results_for_query)
        with read_rows(self) as session:
            models = fetch_all(session, query)
            next_page_token = self._compute_next_token(
                max_results_for_query, len(models), offset, max_results)
            models = list(models)[:max_results]
            latest = _latest_versions(self, session, [m.name for m in models])
            tags, aliases = _model_children(session, models)
            entities = [
                RegisteredModel(
                    m.name,
                    m.creation_time,
                    m.last_updated_time,
                    m.description,
                    latest.get(m.name, []),
                    tags.get((m.workspace, m.name), []),
                    aliases.get((m.workspace, m.name), []),
                    workspace=m.workspace,
                )
                for m in models
            ]
        return PagedList(entities, next_page_token)

    return fast


#: Method name -> (the fast method's maker, what it mirrors).
METHODS: dict[str, tuple[Callable[[Callable[..., Any]], Callable[..., Any]], dict[str, str]]] = {
    MODELS.name: (search_registered_models, MODELS_PINS),
    VERSIONS.name: (search_model_versions, VERSIONS_PINS),
}


def changed_upstream() -> list[str]:
    return changed({**MODELS_PINS, **VERSIONS_PINS})


def install(store_type: Any) -> list[str]:
    """Put the fast methods on ``store_type`` (idempotent); the methods now fast. A method
    whose mirrored functions changed is left MLflow's, with a warning."""
    installed = []
    for name, (make, pins) in METHODS.items():
        current = vars(store_type)[name]
        if getattr(current, "fast_registry", False):
            installed.append(name)
            continue
        differs = changed(pins)
        if differs:
            log.warning("%s: MLflow's own method (these changed since the fast path was "
                        "checked: %s)", name, ", ".join(differs))
            continue
        fast = make(current)
        setattr(fast, "fast_registry", True)  # noqa: B010  (a marker on a function)
        setattr(store_type, name, fast)
        installed.append(name)
    return installed


def apply(app: Any = None) -> None:
    """On MLflow's registry SqlAlchemyStore, which both apps' servers use."""
    for shape in UPSTREAM:
        shape.require()
    install(_base())
