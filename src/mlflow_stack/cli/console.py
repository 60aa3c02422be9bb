"""Consoles, the progress renderer and error printing shared by the commands."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from mlflow_stack.errors import StackError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class RichProgress:
    """Each step shows a spinner while it runs (with what it is doing right now, on a
    terminal), then a line with its duration, then its details: a detail reported while the
    step runs belongs under that step's line, not above it (where it would read as the
    previous step's)."""

    def __init__(self, console: Console = err) -> None:
        self.console = console
        self._status: Status | None = None
        self._title = ""
        self._details: list[str] | None = None  # the running step's, printed after its line

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        start = time.monotonic()
        outer, self._details = self._details, []
        details = self._details
        try:
            try:
                with self.console.status(f"{escape(title)} ...") as status:
                    self._status, self._title = status, title
                    try:
                        yield
                    finally:
                        self._status = None
            except BaseException:
                self.console.print(f"[red]✗[/red] {escape(title)}")
                raise
            took = time.monotonic() - start
            self.console.print(f"[green]✓[/green] {escape(title)} [dim]({took:.1f}s)[/]")
        finally:
            self._details = outer
            for text in details:
                self.detail(text)

    def detail(self, text: str) -> None:
        if self._details is not None:
            self._details.append(text)
        else:
            self.console.print(f"  [dim]{escape(text)}[/]")

    def activity(self, text: str) -> None:
        if self._status is not None and self.console.is_terminal:
            self._status.update(f"{escape(self._title)} ... [dim]{escape(text)}[/]")
        else:  # a log or a pipe: one line each (they are few)
            self.console.print(f"  [dim]· {escape(text)}[/]")


def program() -> str:
    """How to call this command again from the user's shell, as printed: `mlflow-stack` when
    that is what the shell finds, else the absolute path of this install's script (e.g. the
    venv's, when the venv is not active)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.name != "mlflow-stack":  # python -m mlflow_stack.cli.main
        script = Path(sys.executable).parent / "mlflow-stack"
        if not script.is_file():
            return f"{shlex.quote(sys.executable)} -m mlflow_stack.cli.main"
    script = script.absolute()
    found = shutil.which("mlflow-stack")
    if found is not None and Path(found).resolve() == script.resolve():
        return "mlflow-stack"
    return shlex.quote(str(script))


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
