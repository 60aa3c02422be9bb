"""Search filters and orderings parsed once per text (speed; the same results, no data cached).

MLflow parses every search's ``filter`` and each ``order_by`` entry with sqlparse on every
request, for the experiment page's default ordering and the registry's alike: ~10 % of a model
versions search on this machine. The parse depends on nothing but the text (and the parser's
class), so results are kept per text, a bounded number of them (least recently used go
first): filters as a deep copy each time (callers receive lists of dicts they may change),
orderings as the immutable pairs they are. Errors are not kept: a bad filter is parsed, and
refused, each time. Nothing read from the database is cached here.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from mlflow_stack.server.guards import Shape, wrapping

UTILS = "mlflow.utils.search_utils"
FILTER = Shape(UTILS, "SearchUtils.parse_search_filter", ("filter_string",))
VERSION_FILTER = Shape(UTILS, "SearchModelVersionUtils.parse_search_filter", ("filter_string",))
ORDER = Shape(UTILS, "SearchUtils._parse_order_by_string", ("order_by",))
UPSTREAM = (FILTER, VERSION_FILTER, ORDER)
KEPT = 512  # texts per parser: the UI sends a handful; anything beyond is parsed again


def _cached_filter(original: Any) -> Any:
    parse = original.__func__

    @functools.lru_cache(maxsize=KEPT)
    def parsed(cls: type, filter_string: str) -> Any:
        return parse(cls, filter_string)

    @wrapping(original)
    def parse_search_filter(cls: type, filter_string: Any) -> Any:
        if not isinstance(filter_string, str):  # None, or something MLflow will refuse
            return parse(cls, filter_string)
        return copy.deepcopy(parsed(cls, filter_string))

    setattr(parse_search_filter, "parse_cache", parsed)  # noqa: B010  (for tests)
    return classmethod(parse_search_filter)


def _cached_order(original: Any) -> Any:
    parse = original.__func__

    @functools.lru_cache(maxsize=KEPT)
    def parsed(cls: type, order_by: str) -> tuple[str, bool]:
        token_value, is_ascending = parse(cls, order_by)
        return token_value, is_ascending

    @wrapping(original)
    def _parse_order_by_string(cls: type, order_by: Any) -> Any:
        if not isinstance(order_by, str):
            return parse(cls, order_by)
        return parsed(cls, order_by)

    setattr(_parse_order_by_string, "parse_cache", parsed)  # noqa: B010  (for tests)
    return classmethod(_parse_order_by_string)


def _install(shape: Shape, make: Callable[[Any], Any]) -> None:
    owner = shape.owner()
    bound = getattr(owner, shape.name)  # the classmethod bound to its class
    if getattr(bound, "parse_cache", None) is not None:
        return  # installed already
    setattr(owner, shape.name, make(bound))


def apply(app: Any = None) -> None:
    for shape in UPSTREAM:
        shape.require()
    _install(FILTER, _cached_filter)
    _install(VERSION_FILTER, _cached_filter)
    _install(ORDER, _cached_order)
