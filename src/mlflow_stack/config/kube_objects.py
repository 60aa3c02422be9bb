"""Kubernetes API fragments written in the config (tolerations, affinity, volumes, env...),
checked against the API's own schema (lightkube's models) before anything is applied.

lightkube's models check types and required fields but drop keys they don't know, which would
turn a misspelt `nodeAfinity` into "no affinity" silently; comparing the input with the model's
round trip finds those keys, and the model's fields give the did-you-mean.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
from lightkube.models import core_v1
from pydantic import AfterValidator

T = TypeVar("T")


def _field_names(parsed: Any) -> list[str]:
    if isinstance(parsed, msgspec.Struct):
        return list(parsed.__struct_fields__)
    if dataclasses.is_dataclass(parsed):
        return [f.name for f in dataclasses.fields(parsed)]
    return []


def _unknown_keys(given: Any, kept: Any, parsed: Any, path: str) -> str | None:
    """The first key of `given` the model dropped, as a message with a did-you-mean."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in kept:
                allowed = _field_names(parsed)
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else (
                    f"; expected one of: {', '.join(allowed)}" if allowed else "")
                return f"unknown field {where!r}{hint}"
            found = _unknown_keys(value, kept[key], getattr(parsed, key, None), where)
            if found:
                return found
    elif isinstance(given, list) and isinstance(kept, list) and isinstance(parsed, list):
        for i, (g, k, p) in enumerate(zip(given, kept, parsed, strict=False)):
            found = _unknown_keys(g, k, p, f"{path}[{i}]")
            if found:
                return found
    return None


def check_object(value: Any, model: type[Any], kind: str) -> dict[str, Any]:
    """`value` if it is a valid `kind` (a lightkube model of the Kubernetes API); else a
    ValueError naming the first wrong field."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a {kind} (a mapping), got {value!r}")
    try:
        parsed = model.from_dict(value)
    except (msgspec.ValidationError, TypeError) as exc:
        where = str(exc).replace(" - at `$", " at `")
        raise ValueError(f"not a valid {kind}: {where}") from None
    problem = _unknown_keys(value, parsed.to_dict(), parsed, "")
    if problem:
        raise ValueError(f"not a valid {kind}: {problem}")
    return dict(value)


def _checker(model: type[Any], kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda value: check_object(value, model, kind)


Toleration = Annotated[dict[str, Any], AfterValidator(_checker(core_v1.Toleration, "toleration"))]
Affinity = Annotated[dict[str, Any], AfterValidator(_checker(core_v1.Affinity, "affinity"))]
TopologySpread = Annotated[dict[str, Any], AfterValidator(
    _checker(core_v1.TopologySpreadConstraint, "topology spread constraint"))]
EnvVar = Annotated[dict[str, Any], AfterValidator(_checker(core_v1.EnvVar, "container env var"))]
Volume = Annotated[dict[str, Any], AfterValidator(_checker(core_v1.Volume, "volume"))]
VolumeMount = Annotated[dict[str, Any], AfterValidator(
    _checker(core_v1.VolumeMount, "volume mount"))]
