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

Applied to the SSO app (``apply``) and MLflow's own app without SSO (``apply_mlflow``, from
server/plain_app.py), which serve the API through the same handlers module.
"""

from __future__ import annotations

import importlib
from typing import Any

from mlflow_stack.server.guards import Shape, UpstreamChanged, wrapping

PARAMS = ("message", "pretty", "convert_int64_to_number")
SOURCE = Shape("mlflow.utils.proto_json_utils", "message_to_json", PARAMS)
HANDLERS = Shape("mlflow.server.handlers", "message_to_json", PARAMS)
FILTERS = Shape("mlflow_oidc_auth.hooks.after_request", "message_to_json", PARAMS)
UPSTREAM = (SOURCE, HANDLERS, FILTERS)


def compact(original: Any) -> Any:
    """``original`` with ``pretty`` forced off; ``original`` is its ``__wrapped__``."""

    @wrapping(original)
    def message_to_json(message: Any, *, pretty: bool = True,
                        convert_int64_to_number: bool = True) -> str:
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
