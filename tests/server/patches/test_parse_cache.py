"""Search filters and orderings parsed once per text (server/patches/parse_cache.py): the same
results as MLflow's parsers for runs, registered models and model versions, a fresh copy each
time, per parser class, errors raised every time, and both apps use it."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils import search_utils

from mlflow_stack.server.patches import parse_cache

parse_cache.apply()
SearchUtils: Any = search_utils.SearchUtils  # MLflow is untyped
SearchModelUtils: Any = search_utils.SearchModelUtils
SearchModelVersionUtils: Any = search_utils.SearchModelVersionUtils

FILTERS: list[tuple[Any, str]] = [
    (SearchUtils, "metrics.loss < 0.2 and params.opt = 'adam'"),
    (SearchUtils, "tags.team = 'a' and attributes.status != 'FAILED'"),
    (SearchUtils, "dataset.name = 'train'"),
    (SearchModelUtils, "name LIKE 'model-%' and tags.team = 'ü'"),
    (SearchModelVersionUtils, "name = 'm' and version_number > 2"),
    (SearchModelVersionUtils, "run_id IN ('a', 'b')"),
]


def _mlflow(cls: Any, name: str) -> Any:
    """MLflow's own parser, bound to ``cls``."""
    return getattr(cls, name).__wrapped__.__func__.__get__(cls, cls)


@pytest.mark.parametrize(("cls", "text"), FILTERS)
def test_filters_parse_as_mlflow_parses_them_and_each_caller_gets_its_own(
        cls: Any, text: str) -> None:
    expected = _mlflow(cls, "parse_search_filter")(text)
    first = cls.parse_search_filter(text)
    assert first == expected
    first[0]["key"] = "changed by a caller"
    first.append({"type": "attribute"})
    assert cls.parse_search_filter(text) == expected


def test_a_text_is_parsed_once_per_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    kept: Any = getattr(SearchUtils.parse_search_filter, "parse_cache")  # noqa: B009
    kept.cache_clear()
    for _ in range(3):
        SearchUtils.parse_search_filter("metrics.x > 1")
    SearchModelUtils.parse_search_filter("name = 'x'")
    info = kept.cache_info()
    assert (info.hits, info.misses) == (2, 2)
    # The same text under another parser is that parser's answer, not the first one's.
    with pytest.raises(MlflowException):
        SearchUtils.parse_search_filter("name = 'x'")
    assert SearchModelUtils.parse_search_filter("name = 'x'")[0]["key"] == "name"


def test_bad_texts_are_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(MlflowException, match="Invalid"):
            SearchUtils.parse_search_filter("metrics.loss = = 1")
        with pytest.raises(MlflowException, match="ordering key"):
            SearchUtils._parse_order_by_string("start_time SIDEWAYS")
    assert SearchUtils.parse_search_filter("") == []
    assert SearchUtils.parse_search_filter(None) == []


@pytest.mark.parametrize("text", ["attributes.start_time DESC", "metrics.`a b` ASC", "name",
                                  "last_updated_timestamp DESC"])
def test_orderings_parse_as_mlflow_parses_them(text: str) -> None:
    for cls in (SearchUtils, SearchModelUtils, SearchModelVersionUtils):
        assert cls._parse_order_by_string(text) == \
            _mlflow(cls, "_parse_order_by_string")(text)
    if text.startswith(("attributes.", "metrics.")):
        assert SearchUtils.parse_order_by_for_search_runs(text) is not None


def test_the_cache_is_bounded() -> None:
    kept: Any = getattr(SearchUtils._parse_order_by_string, "parse_cache")  # noqa: B009
    for n in range(parse_cache.KEPT + 50):
        SearchUtils._parse_order_by_string(f"metrics.m{n} DESC")
    assert kept.cache_info().currsize <= parse_cache.KEPT


def test_both_apps_use_it() -> None:
    from mlflow_stack.server import plain_app, sso_app

    assert plain_app.app is not None and sso_app.app is not None
    assert getattr(SearchUtils.parse_search_filter, "parse_cache", None) is not None
    assert getattr(SearchModelVersionUtils.parse_search_filter, "parse_cache", None) is not None
    assert parse_cache in sso_app.ON_APP
