"""Guards for the upstream functions the server runtime wraps or replaces.

Each patch relies on an upstream function's name and parameters. A new pinned version that
renamed or reshaped one must stop the server at start-up (and fail a test), not silently drop
a security fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any


class UpstreamChanged(RuntimeError):
    """An upstream function a patch wraps is missing or has another shape."""


def require(owner: Any, name: str, params: Sequence[str]) -> Callable[..., Any]:
    """``owner.name``, checked to take exactly ``params`` (in order); raises UpstreamChanged."""
    func: Callable[..., Any] | None = getattr(owner, name, None)
    where = f"{getattr(owner, '__name__', owner)}.{name}"
    if func is None or not callable(func):
        raise UpstreamChanged(f"{where} no longer exists: the patch that wraps it must be "
                              "revisited for this version")
    target = getattr(func, "__wrapped__", func)
    found = list(inspect.signature(target).parameters)
    if found != list(params):
        raise UpstreamChanged(f"{where} takes ({', '.join(found)}), the patch expects "
                              f"({', '.join(params)}): revisit it for this version")
    return func
