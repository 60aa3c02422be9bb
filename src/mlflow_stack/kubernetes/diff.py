"""Field-level differences between a live object and what server-side apply would make of it.

Both sides come from the API server (the live object and a dry-run apply), so defaults and
admission are already applied to both: what remains is exactly what `apply` would change.
Bookkeeping the server rewrites on every write is ignored. Secret values never appear in the
output: for a Secret only the key names are reported.
"""

from __future__ import annotations

from typing import Any

_IGNORED_META = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid",
                 "selfLink")
_MAX_VALUE = 60


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without status and server bookkeeping (uid, versions, timestamps)."""
    result = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _IGNORED_META}
    result["metadata"] = meta
    return result


def _key(item: Any) -> str | None:
    """Lists of named things (containers, env, ports, volumes) are compared by name."""
    if isinstance(item, dict):
        for field in ("name", "mountPath", "type"):
            if isinstance(item.get(field), str):
                return f"{item[field]}"
    return None


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        if not value:
            out[path] = {}
        for k, v in value.items():
            _flatten(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list) and value and all(_key(i) is not None for i in value) \
            and len({_key(i) for i in value}) == len(value):
        for item in value:
            _flatten(item, f"{path}[{_key(item)}]", out)
    else:
        out[path] = value


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    text = text.replace("\n", "\\n")
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 3] + "..."


def field_diff(live: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """One line per differing field: `path: old -> new`, `+ path = new`, `- path`."""
    secret = desired.get("kind") == "Secret"
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(normalized(live), "", before)
    _flatten(normalized(desired), "", after)
    lines = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path, _MISSING), after.get(path, _MISSING)
        if old == new:
            continue
        hide = secret and path.startswith(("data.", "stringData."))
        if old is _MISSING:
            lines.append(f"+ {path}" if hide else f"+ {path} = {_show(new)}")
        elif new is _MISSING:
            lines.append(f"- {path}")
        else:
            lines.append(f"{path}: changed" if hide else f"{path}: {_show(old)} -> {_show(new)}")
    return lines


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()
