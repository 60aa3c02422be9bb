"""Consoles, the progress renderer and error printing shared by the commands."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

from mlflow_stack.errors import StackError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class RichProgress:
    """Each step shows a spinner while it runs, then a line with its duration."""

    def __init__(self, console: Console = err) -> None:
        self.console = console

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            with self.console.status(f"{escape(title)} ..."):
                yield
        except BaseException:
            self.console.print(f"[red]✗[/red] {escape(title)}")
            raise
        took = time.monotonic() - start
        self.console.print(f"[green]✓[/green] {escape(title)} [dim]({took:.1f}s)[/]")

    def detail(self, text: str) -> None:
        self.console.print(f"  [dim]{escape(text)}[/]")


def print_error(exc: BaseException, debug: bool) -> int:
    """One readable message (traceback only with --debug); returns the exit code."""
    if debug:
        err.print(escape("".join(traceback.format_exception(exc))))
    if isinstance(exc, StackError):
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        if exc.hint:
            err.print(f"[dim]hint: {escape(exc.hint)}[/]")
        return exc.exit_code
    err.print(f"[red]error:[/red] unexpected {type(exc).__name__}: {escape(str(exc))}")
    err.print("[dim]hint: run again with --debug for the traceback[/]")
    return 1
