"""The trace ids OTLP ingestion writes to, decoded as MLflow decodes them (the live checks are
in tests/server/test_attacks_genai.py)."""

from __future__ import annotations

import gzip
import json
import uuid

import pytest

from mlflow_stack.server.patches.otlp_ingest import Undecodable, trace_ids_of


def _payload(*trace_hexes: str) -> dict[str, object]:
    spans = [{"traceId": h, "spanId": uuid.uuid4().hex[:16], "name": "s",
              "startTimeUnixNano": "1", "endTimeUnixNano": "2"} for h in trace_hexes]
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]}


def test_json_gzip_and_protobuf_payloads_name_their_traces() -> None:
    from google.protobuf.json_format import Parse
    from mlflow.server.otel_api import _convert_otlp_json_ids_to_base64
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    body = json.dumps(_payload(a, b, a)).encode()
    wanted = {f"tr-{a}", f"tr-{b}"}
    assert trace_ids_of(body, "application/json", None) == wanted
    assert trace_ids_of(gzip.compress(body), "application/json; charset=utf-8", "GZIP") == wanted
    proto = Parse(_convert_otlp_json_ids_to_base64(body), ExportTraceServiceRequest())
    assert trace_ids_of(proto.SerializeToString(), "application/x-protobuf", None) == wanted


@pytest.mark.parametrize(("body", "content_type", "encoding"), [
    (b"{not json", "application/json", None),
    (b"\x00garbage", "application/json", "gzip"),
    (b"{}", "text/plain", None),
    (b"{}", None, None),
    (json.dumps(_payload("zz")).encode(), "application/json", None),
])
def test_what_mlflow_could_not_decode_is_undecodable(body: bytes, content_type: str | None,
                                                     encoding: str | None) -> None:
    with pytest.raises(Undecodable):
        trace_ids_of(body, content_type, encoding)
