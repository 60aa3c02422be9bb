"""The API's JSON without pretty-printing: the same values as MLflow's own serializer, compact.

The live servers (plain and SSO, MLflow's Python client and the UI's calls) are in
tests/server/test_compact_json_live.py; here the replacement itself and where it is bound.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.protos.service_pb2 import SearchRuns
from mlflow.utils import proto_json_utils

from mlflow_stack.server.guards import UpstreamChanged
from mlflow_stack.server.patches import compact_json

ORIGINAL = proto_json_utils.message_to_json
BIG = 2**62 + 1  # an int64 no double holds: must stay an exact JSON number


def search_response() -> SearchRuns.Response:
    info = RunInfo(run_id="r" * 32, experiment_id="7", user_id="ana@example.com",
                   status="FINISHED", start_time=1_764_000_000_123, end_time=BIG,
                   lifecycle_stage="active", artifact_uri="mlflow-artifacts:/7/r/artifacts",
                   run_name="brave-owl-1")
    data = RunData(metrics=[Metric("loss", 0.25, 1_764_000_000_456, 99),
                            Metric("nan", float("nan"), 1, -(2**40))],
                   params=[Param("optimizer", "adam"), Param("note", "ünïcode → \"quoted\"\n")],
                   tags=[RunTag("mlflow.runName", "brave-owl-1")])
    response = SearchRuns.Response(next_page_token="eyJvZmZzZXQiOiAxMDB9")
    response.runs.extend([Run(info, data).to_proto()])
    return response


def test_the_same_values_as_mlflow_pretty_json_in_mlflow_compact_form() -> None:
    message = search_response()
    out = compact_json.compact(ORIGINAL)(message)
    pretty = ORIGINAL(message)
    assert json.loads(out) == json.loads(pretty) == json.loads(ORIGINAL(message, pretty=False))
    assert out == ORIGINAL(message, pretty=False)  # MLflow's own compact form, byte for byte
    assert "\n" not in out and '", "' not in out
    assert len(out) < 0.8 * len(pretty)
    parsed = json.loads(out)
    assert parsed["runs"][0]["info"]["end_time"] == BIG  # int64 as an exact number, as before
    assert parsed["runs"][0]["data"]["params"][1]["value"] == "ünïcode → \"quoted\"\n"
    assert "\\u00fc" in out  # ensure_ascii as MLflow's (same escapes as the pretty form)
    # The int64 rule stays the caller's choice.
    assert compact_json.compact(ORIGINAL)(message, convert_int64_to_number=False) == \
        ORIGINAL(message, pretty=False, convert_int64_to_number=False)


def test_the_sso_app_serves_compact_json_from_both_modules() -> None:
    from mlflow.server import handlers
    from mlflow_oidc_auth.hooks import after_request

    from mlflow_stack.server import plain_app, sso_app

    assert sso_app.app is not None and plain_app.app is not None
    for module in (handlers, after_request):
        bound: Any = vars(module)["message_to_json"]
        assert bound is not ORIGINAL and bound.__wrapped__ is ORIGINAL
        assert bound(search_response()) == ORIGINAL(search_response(), pretty=False)
    assert proto_json_utils.message_to_json is ORIGINAL  # nothing else is changed
    # Applying again (both apps in one process) keeps the one replacement.
    before = vars(handlers)["message_to_json"]
    compact_json.apply()
    compact_json.apply_mlflow()
    assert vars(handlers)["message_to_json"] is before


def test_a_module_that_serializes_with_another_function_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.server import handlers

    def other(message: object, *, pretty: bool = True,
              convert_int64_to_number: bool = True) -> str:
        return ""

    monkeypatch.setattr(handlers, "message_to_json", other)
    with pytest.raises(UpstreamChanged, match=re.escape(
            "mlflow.server.handlers.message_to_json is no longer "
            "mlflow.utils.proto_json_utils.message_to_json")):
        compact_json.apply_mlflow()
    assert vars(handlers)["message_to_json"] is other

