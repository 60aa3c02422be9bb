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



# --------------------------------------------------------------------------------------------
# message_dict: the same dict as MessageToDict + MLflow's int64 pass, for every message type

PROTO_MODULES = ("service_pb2", "model_registry_pb2", "mlflow_artifacts_pb2", "webhooks_pb2",
                 "assessments_pb2", "datasets_pb2", "jobs_pb2", "issues_pb2",
                 "label_schemas_pb2", "review_queues_pb2", "prompt_optimization_pb2",
                 "internal_pb2")
TEXTS = ("", "a", "ünïcode → \"quoted\"\n", "\u2028\x00\\", "🙂" * 3, "x" * 300)
DOUBLES = (0.0, -0.0, 0.1, 1e-300, -1.5e300, 2.0**53 + 1, float("nan"), float("inf"),
           float("-inf"))


def _all_message_classes() -> list[Any]:
    import importlib

    from google.protobuf import message_factory

    found, seen = [], set()

    def walk(descriptor: Any) -> None:
        if descriptor.full_name in seen or descriptor.GetOptions().map_entry:
            return
        seen.add(descriptor.full_name)
        found.append(message_factory.GetMessageClass(descriptor))
        for nested in descriptor.nested_types:
            walk(nested)

    for name in PROTO_MODULES:
        module = importlib.import_module(f"mlflow.protos.{name}")
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            walk(descriptor)
    return found


def _value(field: Any, rng: Any) -> Any:
    from google.protobuf.descriptor import FieldDescriptor as F

    kind = field.type
    if kind == F.TYPE_ENUM:
        return rng.choice(field.enum_type.values).number
    if kind in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return rng.choice((0, 1, -1, 2**62 + 1, -(2**63), 2**63 - 1, rng.randint(-10**6, 10**6)))
    if kind in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return rng.choice((0, 1, 2**64 - 1, 2**53 + 1))
    if kind in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return rng.choice((0, -1, 2**31 - 1, -(2**31)))
    if kind in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return rng.choice((0, 2**32 - 1))
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return rng.choice(DOUBLES[:4] + DOUBLES[6:]) if kind == F.TYPE_FLOAT \
            else rng.choice(DOUBLES)
    if kind == F.TYPE_BOOL:
        return rng.random() < 0.5
    if kind == F.TYPE_STRING:
        return rng.choice(TEXTS)
    if kind == F.TYPE_BYTES:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
    raise AssertionError(kind)


def _populate(message: Any, rng: Any, depth: int) -> None:
    from google.protobuf.descriptor import FieldDescriptor as F

    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.25:
            continue
        target = getattr(message, field.name)
        if field.type == F.TYPE_MESSAGE:
            sub = field.message_type
            if sub.full_name == "google.protobuf.Any" or depth > 3:
                continue
            if sub.GetOptions().map_entry:
                key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
                for _ in range(rng.randrange(3)):
                    key = _value(key_field, rng)
                    if value_field.type == F.TYPE_MESSAGE:
                        _populate(target[key], rng, depth + 1)
                    else:
                        target[key] = _value(value_field, rng)
            elif field.is_repeated:
                for _ in range(rng.randrange(3)):
                    _populate(target.add(), rng, depth + 1)
            elif sub.full_name == "google.protobuf.Struct":
                target.update({"a": 1.5, "b": ["x", None, True]})
            elif sub.full_name == "google.protobuf.Value":
                target.string_value = "v"
            else:
                _populate(target, rng, depth + 1)
                target.SetInParent()
        elif field.is_repeated:
            target.extend(_value(field, rng) for _ in range(rng.randrange(4)))
        else:
            setattr(message, field.name, _value(field, rng))


def test_every_mlflow_message_gets_mlflow_s_json_byte_for_byte() -> None:
    import random

    rng = random.Random(15)
    fast = compact_json.compact(ORIGINAL)
    classes = _all_message_classes()
    converted = 0
    for cls in classes:
        for _ in range(6):
            message = cls()
            _populate(message, rng, 0)
            try:
                expected = ORIGINAL(message, pretty=False)
            except Exception:
                continue
            assert fast(message) == expected, cls.DESCRIPTOR.full_name
            try:
                compact_json.message_dict(message)
                converted += 1
            except compact_json.Unusual:
                pass
    assert len(classes) > 300
    assert converted > 0.6 * len(classes) * 6  # most took the fast walk, not the fallback


def test_the_charts_call_takes_the_fast_walk() -> None:
    from mlflow.entities.metric import MetricWithRunId
    from mlflow.protos.service_pb2 import GetMetricHistoryBulkInterval

    response = GetMetricHistoryBulkInterval.Response()
    response.metrics.extend([MetricWithRunId(Metric("loss", v, BIG, 3), "r" * 32).to_proto()
                             for v in (0.5, float("nan"), float("-inf"))])
    assert compact_json.message_dict(response)["metrics"][1] == {
        "key": "loss", "value": "NaN", "timestamp": BIG, "step": 3, "run_id": "r" * 32}
    assert compact_json.compact(ORIGINAL)(response) == ORIGINAL(response, pretty=False)
