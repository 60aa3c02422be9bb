"""How `--help` reads: paragraphs that flow to the terminal's width, flags shown as flags, and
the commands grouped by what they act on."""

from __future__ import annotations

import inspect
from typing import Any

from typer.core import TyperCommand, TyperGroup, TyperOption

# The panels of `mlflow-stack --help`, in order.
LOCAL = "Local platform"
PROVISIONING = "Provisioning and Kubernetes"
SSO = "Single sign-on and clients"
OPERATIONS = "Operations"
CONFIG = "Configuration"


def flow(text: str | None) -> str | None:
    """Help text whose paragraphs (separated by blank lines) are each one line, so the terminal
    wraps them: typer's rich help keeps a docstring's line breaks, which then break sentences
    mid-line on any other width."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _as_flags(params: list[Any]) -> list[Any]:
    # typer's rich help prints a flag's type (`--detach -d <bool>`), as if it took a value.
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose help flows and whose flags read as flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = flow(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        return _as_flags(super().get_params(ctx))


class Group(TyperGroup):
    """A group (the app, `config`) whose help flows and whose flags read as flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = flow(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        return _as_flags(super().get_params(ctx))
