"""OTLP trace ingestion (``POST /v1/traces``) writes only where the caller may write.

mlflow-oidc-auth 10.1.3 checks one thing on this route: UPDATE on the experiment named by the
``X-Mlflow-Experiment-Id`` header. MLflow then acts on two more things the request names, which
nobody checks:

- the **trace ids in the payload**: a span whose trace already exists is appended to *that*
  trace, in whatever experiment it lives. A user with an experiment of their own added spans
  (inputs, outputs) to another user's trace, even one they could not read;
- the **``X-Mlflow-Run-Id`` header**: the ingested traces are linked to that run, any run
  (``/traces/link-to-run`` itself needs UPDATE on the run).

Here the upstream check stays and these are added: UPDATE on the experiment of every trace in
the payload that already exists, and UPDATE on the run's experiment when a run is named. The
trace ids are those MLflow itself derives (the same decoding, ``Span.from_otel_proto``); a
payload that cannot be decoded is refused (MLflow would refuse it too).
"""

from __future__ import annotations

import asyncio
from typing import Any

from mlflow_stack.server.guards import Shape, wrapping
from mlflow_stack.server.log import server_log

_MIDDLEWARE = "mlflow_oidc_auth.middleware.fastapi_permission_middleware"
OTEL_VALIDATOR = Shape(_MIDDLEWARE, "_get_otel_validator", ("path",))
# Looks the validator factory up by module name on every request (so replacing it takes).
FIND_VALIDATOR = Shape(_MIDDLEWARE, "_find_fastapi_validator", ("path",))
PERMISSION = Shape("mlflow_oidc_auth.utils", "effective_experiment_permission",
                   ("experiment_id", "user"))
FROM_PROTO = Shape("mlflow.entities.span", "Span.from_otel_proto",
                   ("otel_proto_span", "location_id", "preserve_request_id", "resource"))
DECOMPRESS = Shape("mlflow.tracing.utils.otlp", "decompress_otlp_body",
                   ("raw_body", "content_encoding"))
JSON_IDS = Shape("mlflow.server.otel_api", "_convert_otlp_json_ids_to_base64", ("body",))
UPSTREAM = (OTEL_VALIDATOR, FIND_VALIDATOR, PERMISSION, FROM_PROTO, DECOMPRESS, JSON_IDS)

RUN_HEADER = "x-mlflow-run-id"


class Undecodable(ValueError):
    """The OTLP payload cannot be read the way MLflow reads it."""


def trace_ids_of(body: bytes, content_type: str | None, content_encoding: str | None) -> set[str]:
    """The MLflow trace ids MLflow's OTLP handler would write spans to, decoded as it does."""
    from google.protobuf.json_format import Parse
    from mlflow.entities.span import Span
    from mlflow.server.otel_api import _convert_otlp_json_ids_to_base64
    from mlflow.tracing.utils.otlp import decompress_otlp_body
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    media_type = (content_type or "").split(";")[0].strip()
    parsed = ExportTraceServiceRequest()
    try:
        if content_encoding:
            body = decompress_otlp_body(body, content_encoding.lower())
        if media_type == "application/json":
            Parse(_convert_otlp_json_ids_to_base64(body), parsed, ignore_unknown_fields=True)
        elif media_type == "application/x-protobuf":
            parsed.ParseFromString(body)
        else:
            raise Undecodable(f"content type {media_type!r}")
        return {Span.from_otel_proto(span, resource=resource_spans.resource).trace_id
                for resource_spans in parsed.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans}
    except Undecodable:
        raise
    except Exception as exc:  # whatever MLflow's decoding raises, it would refuse the payload
        raise Undecodable(type(exc).__name__) from None


def experiments_written(trace_ids: set[str], run_id: str | None) -> set[str]:
    """The experiments, besides the header's, that ingesting these traces writes into: those of
    the traces that already exist, and the named run's."""
    from mlflow.server.handlers import _get_tracking_store

    store: Any = _get_tracking_store()  # untyped upstream
    experiments: set[str] = set()
    if trace_ids:
        for info in store.batch_get_trace_infos(sorted(trace_ids)):
            location = info.trace_location.mlflow_experiment
            if location is None or not location.experiment_id:
                raise PermissionError(f"trace {info.trace_id} is not in an experiment")
            experiments.add(str(location.experiment_id))
    if run_id:
        experiments.add(str(store.get_run(run_id).info.experiment_id))
    return experiments


def apply() -> None:
    original = OTEL_VALIDATOR.require()
    FIND_VALIDATOR.require()
    for shape in (PERMISSION, FROM_PROTO, DECOMPRESS, JSON_IDS):
        shape.require()

    def allowed(username: str, body: bytes, headers: Any) -> bool:
        from mlflow_oidc_auth.utils import effective_experiment_permission

        try:
            trace_ids = trace_ids_of(body, headers.get("content-type"),
                                     headers.get("content-encoding"))
            experiments = experiments_written(trace_ids, headers.get(RUN_HEADER) or None)
        except Exception as exc:  # undecodable payload, unknown run, store error: fail closed
            server_log().warning("Refusing OTLP traces from %s: %s", username,
                                 type(exc).__name__)
            return False
        for experiment_id in sorted(experiments):
            if not effective_experiment_permission(experiment_id, username).permission.can_update:
                server_log().warning("Refusing OTLP traces from %s: no UPDATE on experiment %s "
                                     "(an existing trace or the named run lives there)",
                                     username, experiment_id)
                return False
        return True

    @wrapping(original)
    def otel_validator(path: str) -> Any:
        upstream = original(path)
        if upstream is None:
            return None

        async def validator(username: str, request: Any) -> bool:
            if not await upstream(username, request):
                return False
            body = await request.body()  # Starlette replays it to the handler
            return await asyncio.to_thread(allowed, username, body, request.headers)

        return validator

    setattr(OTEL_VALIDATOR.owner(), OTEL_VALIDATOR.name, otel_validator)


__all__ = ["UPSTREAM", "Undecodable", "apply", "experiments_written", "trace_ids_of"]
