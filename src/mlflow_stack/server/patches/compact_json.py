"""API responses as compact JSON (speed; the same JSON values, byte for byte once parsed).

MLflow's handlers serialize every protobuf response with ``message_to_json``, which
pretty-prints (``json.dumps(..., indent=2)``). With an indent, ``json.dumps`` cannot use its C
encoder and falls back to the pure-Python one, and the body is ~2.3x the bytes: the experiment
page's ``runs/search`` (100 runs with metrics, params and tags) spent ~105 ms of its ~270 ms
there for 469 KB (bench/scale.py). mlflow-oidc-auth's after-request filters (search results
trimmed to what the user may read) re-serialize the same way.

Here both modules' ``message_to_json`` become the same function called with ``pretty=False``:
MLflow's own compact form (``separators=(",", ":")``), the same dict (same fields, same
int64-as-number conversion, same ``ensure_ascii``), only the whitespace between tokens gone.
Every JSON parser (MLflow's Python client, the UI's ``fetch(...).json()``) reads the same
values. A call that already asks for ``pretty=False`` is unchanged.

The dict itself is built by ``message_dict``, one walk over the message instead of
protobuf's ``MessageToDict`` plus MLflow's second walk that turns int64 strings back into
numbers: for the charts' ``metrics/get-history-bulk-interval`` (1,000 metrics) 11 ms became
~3 ms. It produces the same dict, key order included (tests/server/patches/test_compact_json.py
compares the JSON text of every MLflow message type, populated at random, with MLflow's).
Maps, well-known types (Timestamp, Struct, ...), extensions and enum numbers without a name
are left to MLflow's function (``Unusual``).

Applied to the SSO app (``apply``) and MLflow's own app without SSO (``apply_mlflow``, from
server/plain_app.py), which serve the API through the same handlers module.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
from collections.abc import Callable
from typing import Any

from mlflow_stack.server.guards import Shape, UpstreamChanged, wrapping
from mlflow_stack.server.mirrors import json_double

PARAMS = ("message", "pretty", "convert_int64_to_number")
SOURCE = Shape("mlflow.utils.proto_json_utils", "message_to_json", PARAMS)
HANDLERS = Shape("mlflow.server.handlers", "message_to_json", PARAMS)
FILTERS = Shape("mlflow_oidc_auth.hooks.after_request", "message_to_json", PARAMS)
UPSTREAM = (SOURCE, HANDLERS, FILTERS)


class Unusual(Exception):
    """A message part ``message_dict`` does not convert: MLflow's function does the message."""


Convert = Callable[[Any], Any]
_PLANS: dict[Any, tuple[str, bool, Convert]] = {}


def _float(value: float) -> float | str:
    from google.protobuf.internal import type_checkers

    if math.isnan(value) or math.isinf(value):
        return json_double(value)
    shortest: float = type_checkers.ToShortestFloat(value)
    return shortest


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("utf-8")


def _enum(field: Any) -> Convert:
    names: dict[int, str] = {number: value.name
                             for number, value in field.enum_type.values_by_number.items()}
    if field.enum_type.full_name == "google.protobuf.NullValue":
        raise Unusual(field.full_name)

    def convert(value: int) -> str:
        name = names.get(value)
        if name is None:
            raise Unusual(f"{field.full_name}: enum number {value} without a name")
        return name

    return convert


def _plan(field: Any) -> tuple[str, bool, Convert]:
    """How one field is written (name, repeated, converter), as MessageToDict with
    preserving_proto_field_name and MLflow's int64-as-number pass write it."""
    from google.protobuf.descriptor import FieldDescriptor as F

    if field.is_extension:
        raise Unusual(field.full_name)
    convert: Convert
    if field.type in (F.TYPE_MESSAGE, F.TYPE_GROUP):
        options = field.message_type.GetOptions()
        if options.map_entry or field.message_type.full_name.startswith("google.protobuf."):
            raise Unusual(field.full_name)
        convert = message_dict
    elif field.type == F.TYPE_ENUM:
        convert = _enum(field)
    elif field.type in (F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_FIXED64, F.TYPE_SFIXED64,
                        F.TYPE_SINT64, F.TYPE_INT32, F.TYPE_UINT32, F.TYPE_FIXED32,
                        F.TYPE_SFIXED32, F.TYPE_SINT32):
        convert = int
    elif field.type == F.TYPE_DOUBLE:
        convert = json_double
    elif field.type == F.TYPE_FLOAT:
        convert = _float
    elif field.type == F.TYPE_BOOL:
        convert = bool
    elif field.type == F.TYPE_STRING:
        convert = str
    elif field.type == F.TYPE_BYTES:
        convert = _bytes
    else:
        raise Unusual(field.full_name)
    return field.name, field.is_repeated, convert


def message_dict(message: Any) -> dict[str, Any]:
    """``message`` as MLflow's ``message_to_json`` builds its dict (Unusual if not here)."""
    if message.DESCRIPTOR.full_name.startswith("google.protobuf."):
        raise Unusual(message.DESCRIPTOR.full_name)
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        plan = _PLANS.get(field)
        if plan is None:
            plan = _PLANS[field] = _plan(field)
        name, repeated, convert = plan
        out[name] = [convert(item) for item in value] if repeated else convert(value)
    return out


def compact(original: Any) -> Any:
    """``original`` with ``pretty`` forced off and the dict built in one walk;
    ``original`` is its ``__wrapped__``."""

    @wrapping(original)
    def message_to_json(message: Any, *, pretty: bool = True,
                        convert_int64_to_number: bool = True) -> str:
        if convert_int64_to_number:
            try:
                return json.dumps(message_dict(message), separators=(",", ":"))
            except Unusual:
                pass
        result: str = original(message, pretty=False,
                               convert_int64_to_number=convert_int64_to_number)
        return result

    return message_to_json


def _replace(shapes: tuple[Shape, ...]) -> None:
    """Check every shape first, then rebind each module's name (idempotent: a module already
    holding the compact function keeps it)."""
    source = SOURCE.require()
    for shape in shapes:
        bound = shape.require()
        if getattr(bound, "__wrapped__", bound) is not source:
            # The module serializes with something else now: forcing pretty off on it could
            # change what it writes.
            raise UpstreamChanged(f"{shape.module}.{shape.path} is no longer "
                                  f"{SOURCE.module}.{SOURCE.path}: revisit the patch")
    replacement = compact(source)
    for shape in shapes:
        module = importlib.import_module(shape.module)
        if getattr(module, shape.name) is source:
            setattr(module, shape.name, replacement)


def apply_mlflow() -> None:
    """MLflow's handlers only (the app without SSO; mlflow-oidc-auth is not loaded there)."""
    _replace((HANDLERS,))


def apply() -> None:
    """MLflow's handlers and mlflow-oidc-auth's search filters (the SSO app)."""
    _replace((HANDLERS, FILTERS))
