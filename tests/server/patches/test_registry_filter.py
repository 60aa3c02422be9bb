"""A registry search page the user may read whole skips the permission filter's rewrite
(server/patches/registry_filter.py): when the filter would change nothing, and only then; where
mlflow-oidc-auth looks its filters up; not at all when a pinned filter function changed.
The live side (a hidden model on the pages, paging kept full) is in
tests/server/test_attacks_access.py."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow_oidc_auth.hooks import after_request as hooks
from mlflow_oidc_auth.hooks import route_policy

from mlflow_stack.server.patches import registry_filter

HIDDEN = {"secret"}


def _readable(name: str) -> bool:
    return name not in HIDDEN


def _page(*names: str, token: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"registered_models": [{"name": n, "latest_versions": []}
                                                  for n in names]}
    if token:
        body["next_page_token"] = token
    return body


@pytest.mark.parametrize(("body", "max_results"), [
    (_page("a", "b"), 100),               # the last page, all readable
    (_page("a", "b", token="t"), 2),      # a full page with more behind it: nothing to top up
    (_page("a", "b", token="t"), 1),      # fuller than asked: the top-up would not run either
    (_page(), 100),                       # nothing found
    ({}, 100),                            # MLflow leaves an empty list out of the JSON
])
def test_a_page_the_filter_would_not_change_passes(body: dict[str, Any],
                                                   max_results: int) -> None:
    assert registry_filter.unchanged(body, "registered_models", lambda: max_results, _readable)


@pytest.mark.parametrize(("body", "max_results"), [
    (_page("a", "secret"), 100),          # a row to remove
    (_page("secret"), 100),
    (_page("a", token="t"), 2),           # a short page with more behind it: top-up
    ({"registered_models": [{"version": "1"}]}, 100),   # no name
    ({"registered_models": [{"name": 7}]}, 100),
    ({"registered_models": ["a"]}, 100),
    ({"registered_models": {"name": "a"}}, 100),
    (["a"], 100),
    (None, 100),                          # not JSON
])
def test_anything_else_goes_to_the_filter(body: Any, max_results: int) -> None:
    assert not registry_filter.unchanged(body, "registered_models", lambda: max_results,
                                        _readable)


def test_every_row_is_checked_until_one_fails() -> None:
    asked: list[str] = []

    def readable(name: str) -> bool:
        asked.append(name)
        return _readable(name)

    body = {"model_versions": [{"name": "a", "version": "1"}, {"name": "b", "version": "3"},
                               {"name": "secret", "version": "2"}, {"name": "c"}]}
    assert not registry_filter.unchanged(body, "model_versions", lambda: 100, readable)
    assert asked == ["a", "b", "secret"]
    # The rows are the named field's: another field's rows are not looked at.
    assert registry_filter.unchanged(body, "registered_models", lambda: 100, readable)


def test_the_page_size_is_asked_only_for_a_page_with_more_behind_it() -> None:
    asked: list[int] = []

    def max_results() -> int:  # parses the request again: only when it can matter
        asked.append(2)
        return 2

    assert registry_filter.unchanged(_page("a", "b"), "registered_models", max_results,
                                     _readable)
    assert asked == []
    assert registry_filter.unchanged(_page("a", "b", token="t"), "registered_models",
                                     max_results, _readable)
    assert asked == [2]


def _filters(handlers: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    return {route: h for route, h in handlers.items()
            if getattr(h, "__wrapped__", h) in (hooks._filter_search_registered_models,
                                                hooks._filter_search_model_versions)}


def test_both_searches_are_wrapped_on_every_route_and_still_count_as_filtered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    originals = {route: getattr(h, "__wrapped__", h)
                 for route, h in hooks.AFTER_REQUEST_HANDLERS.items()}
    monkeypatch.setattr(hooks, "AFTER_REQUEST_HANDLERS", dict(originals))
    routes = registry_filter.install()
    filters = _filters(hooks.AFTER_REQUEST_HANDLERS)
    # /api and /ajax-api, GET and POST, for both searches.
    assert len(filters) >= 4 and sorted(routes) == sorted(r for r, _ in filters)
    for route, handler in filters.items():
        assert getattr(handler, "registry_filter", False), route
        assert handler.__name__ == originals[route].__name__
        assert route_policy.is_filtered_in_after_request(*route), route
    others = {r: h for r, h in hooks.AFTER_REQUEST_HANDLERS.items() if r not in filters}
    assert others == {r: h for r, h in originals.items() if r not in filters}
    assert registry_filter.install() == routes  # idempotent: nothing wrapped twice
    assert all(h.__wrapped__ in (hooks._filter_search_registered_models,
                                 hooks._filter_search_model_versions)
               for h in _filters(hooks.AFTER_REQUEST_HANDLERS).values())


def test_another_mlflow_oidc_auth_keeps_its_filters(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    originals = {route: getattr(h, "__wrapped__", h)
                 for route, h in hooks.AFTER_REQUEST_HANDLERS.items()}
    monkeypatch.setattr(hooks, "AFTER_REQUEST_HANDLERS", dict(originals))
    monkeypatch.setitem(registry_filter.PINS, f"{registry_filter.HOOKS}:_top_up_page", "0" * 64)
    assert registry_filter.install() == []
    assert originals == hooks.AFTER_REQUEST_HANDLERS
    assert "_top_up_page" in caplog.text


def test_the_sso_app_wraps_both_searches() -> None:
    from mlflow_stack.server import sso_app

    assert sso_app.app is not None  # its ON_APP patches ran: nothing installed by this test
    filters = _filters(hooks.AFTER_REQUEST_HANDLERS)
    assert len(filters) >= 4
    assert all(getattr(h, "registry_filter", False) for h in filters.values())
