"""Guards for the upstream functions the server runtime wraps or replaces.

Each patch relies on an upstream function's name and parameters. A new pinned version that
renamed or reshaped one must stop the server at start-up (and fail a test), not silently drop
a security fix. Each patch module lists what it relies on as ``Shape``s and checks them all
before it replaces anything (``server/patches/``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UpstreamChanged(RuntimeError):
    """An upstream function a patch wraps is missing or has another shape."""


def require(owner: Any, name: str, params: Sequence[str], *,
            where: str | None = None) -> Callable[..., Any]:
    """``owner.name``, checked to take exactly ``params`` (in order); raises UpstreamChanged
    (naming it ``where``, default ``<owner's name>.<name>``)."""
    func: Callable[..., Any] | None = getattr(owner, name, None)
    where = where or f"{getattr(owner, '__name__', owner)}.{name}"
    if func is None or not callable(func):
        raise UpstreamChanged(f"{where} no longer exists: the patch that wraps it must be "
                              "revisited for this version")
    target = getattr(func, "__wrapped__", func)
    found = list(inspect.signature(target).parameters)
    if found != list(params):
        raise UpstreamChanged(f"{where} takes ({', '.join(found)}), the patch expects "
                              f"({', '.join(params)}): revisit it for this version")
    return func


@dataclass(frozen=True)
class Shape:
    """One upstream function, class or attribute a patch wraps or relies on.

    ``path`` is dotted inside ``module`` (``"AuthMiddleware._deny"``); ``params`` are the
    parameter names the patch expects, in order (a class: its constructor's, without ``self``),
    or None when only its existence matters.
    """

    module: str
    path: str
    params: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    def owner(self) -> Any:
        """The module or class that holds the target; UpstreamChanged if it is gone."""
        try:
            owner: Any = importlib.import_module(self.module)
        except ImportError as exc:
            raise UpstreamChanged(f"{self.module} cannot be imported ({exc}): the patch that "
                                  "relies on it must be revisited for this version") from None
        for part in self.path.split(".")[:-1]:
            owner = getattr(owner, part, None)
            if owner is None:
                raise UpstreamChanged(f"{self.module}.{self.path} no longer exists: the patch "
                                      "that relies on it must be revisited for this version")
        return owner

    def require(self) -> Any:
        """The target, checked; raises UpstreamChanged if it is missing or has another shape."""
        owner = self.owner()
        if self.params is None:
            if not hasattr(owner, self.name):
                raise UpstreamChanged(f"{self.module}.{self.path} no longer exists: the patch "
                                      "that relies on it must be revisited for this version")
            return getattr(owner, self.name)
        return require(owner, self.name, self.params, where=f"{self.module}.{self.path}")


def wrapping(original: Any) -> Callable[[F], F]:
    """Mark a replacement as wrapping ``original`` (``__wrapped__``, as functools.wraps does,
    names kept for tracebacks): a guard checked after the patch still sees upstream's shape."""

    def mark(replacement: F) -> F:
        replacement.__wrapped__ = original  # type: ignore[attr-defined]
        return replacement

    return mark
