"""A request without a body is not parsed for one (server/patches/empty_body.py): the guard's
answer for it is upstream's ("no body"), without upstream's parse; a request with a length
or a chunked body goes through upstream's function, and a dual-spelled body is still found."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import request
from mlflow.server import app as flask_app
from mlflow_oidc_auth.hooks import dual_spelling_guard as guard

from mlflow_stack.server.patches import empty_body

HISTORY = "/api/2.0/mlflow/metrics/get-history"
LOG = "/api/2.0/mlflow/runs/log-metric"


@pytest.fixture
def upstream_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The patch over upstream's function (counting the calls that reach it)."""
    original = getattr(guard._request_body, "__wrapped__", guard._request_body)
    calls: list[Any] = []

    def counted(req: Any) -> Any:
        calls.append(req.path)
        return original(req)

    monkeypatch.setattr(guard, "_request_body", counted)
    empty_body.apply()
    yield calls


def _answers(path: str, method: str, **kwargs: Any) -> tuple[Any, Any, bool]:
    """What the guard's readers see for this request, patched."""
    with flask_app.test_request_context(path, method=method, **kwargs):
        return (guard._request_body(request), guard.find_dual_spelling_collision(request),
                empty_body.has_body(request.environ))


def test_a_request_without_a_body_is_not_parsed(upstream_calls: list[Any]) -> None:
    body, collision, has = _answers(HISTORY, "GET", query_string={"run_id": "r1"})
    assert (body, collision, has) == (None, None, False)
    _answers(LOG, "POST")  # a POST without a body: nothing to parse either
    assert upstream_calls == []
    # Upstream's own answer for such a request is empty too.
    with flask_app.test_request_context(HISTORY, method="GET"):
        assert not guard._request_body.__wrapped__(request)


def test_bodies_go_through_upstream_and_dual_spelling_is_found(
        upstream_calls: list[Any]) -> None:
    both = json.dumps({"run_id": "mine", "runId": "theirs", "key": "m", "value": 1,
                       "timestamp": 1, "step": 0})
    body, collision, has = _answers(LOG, "POST", data=both, content_type="application/json")
    assert has and body == json.loads(both)
    assert collision == "run_id"
    assert upstream_calls  # read by upstream's function
    upstream_calls.clear()
    _answers(LOG, "POST", data="", content_type="application/json",
             environ_overrides={"CONTENT_LENGTH": "0"})
    assert set(upstream_calls) == {LOG}  # a length given: upstream decides, as before


def test_a_chunked_body_goes_through_upstream(upstream_calls: list[Any]) -> None:
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    with flask_app.test_request_context(LOG, method="POST", environ_base=chunked,
                                        content_type="application/json"):
        assert empty_body.has_body(request.environ)
        guard._request_body(request)
    assert upstream_calls == [LOG]
