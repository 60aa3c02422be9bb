"""Progress reporting for long steps. Library code reports through this; the CLI draws it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Progress(Protocol):
    def step(self, title: str) -> AbstractContextManager[None]: ...

    def detail(self, text: str) -> None: ...

    def activity(self, text: str) -> None:
        """What the running step is doing right now (e.g. the server's latest log line): shown
        in place while the step runs, not kept as a line of its own."""


class NullProgress:
    """Reports nothing (library callers that don't want output); keeps what it was told."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.details: list[str] = []
        self.activities: list[str] = []

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.steps.append(title)
        yield

    def detail(self, text: str) -> None:
        self.details.append(text)

    def activity(self, text: str) -> None:
        self.activities.append(text)
