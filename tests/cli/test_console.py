"""The progress renderer's line order: a step's line, then what it reported."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.text import Text

from mlflow_stack.cli.console import RichProgress


def render(terminal: bool) -> tuple[RichProgress, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=100, color_system=None)
    return RichProgress(console), buffer


def lines(buffer: io.StringIO) -> list[str]:
    # A terminal's spinner frames end in carriage returns / cursor moves: keep what stays.
    kept = []
    for line in buffer.getvalue().splitlines():
        text = Text.from_ansi(line.split("\r")[-1]).plain.strip()
        if text and "..." not in text:
            kept.append(text)
    return kept


@pytest.mark.parametrize("terminal", [False, True])
def test_a_steps_details_follow_its_line(terminal: bool) -> None:
    progress, buffer = render(terminal)
    with progress.step("state directory"):
        progress.detail("/home/me/state")
    with progress.step("start server"):
        progress.activity("worker 1 of 2 starting")
        progress.detail("pid 42")
    shown = [line for line in lines(buffer) if "worker" not in line]
    assert [line.split(" (")[0] for line in shown] == [
        "✓ state directory", "/home/me/state", "✓ start server", "pid 42"]


def test_activities_stay_live_in_a_log() -> None:
    """Not a terminal: what the step is doing is a line as it happens, before the step's."""
    progress, buffer = render(False)
    with progress.step("health"):
        progress.activity("worker 1 of 2 ready")
    assert [line.split(" (")[0] for line in lines(buffer)] == [
        "· worker 1 of 2 ready", "✓ health"]


def test_a_failed_steps_details_follow_its_cross() -> None:
    progress, buffer = render(False)
    with pytest.raises(RuntimeError), progress.step("migrations"):
        progress.detail("backed up to /tmp/b")
        raise RuntimeError("boom")
    progress.detail("after the step")
    assert lines(buffer) == ["✗ migrations", "backed up to /tmp/b", "after the step"]


def test_a_nested_steps_details_stay_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    progress, buffer = render(False)
    with progress.step("outer"):
        progress.detail("outer first")
        # Rich allows one live status at a time; the inner step's details must not be lost.
        monkeypatch.setattr(progress.console, "status", lambda *a, **k: _NoStatus())
        with progress.step("inner"):
            progress.detail("inner's")
    assert [line.split(" (")[0] for line in lines(buffer)] == [
        "✓ inner", "✓ outer", "outer first", "inner's"]


class _NoStatus:
    def __enter__(self) -> _NoStatus:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def update(self, *args: object) -> None:
        return None
