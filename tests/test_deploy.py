"""deploy.plan / apply walking systems: reads concurrent, progress and errors in registry order,
writes only after every read and in order, each client connected once and closed."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mlflow_stack import deploy
from mlflow_stack.components.base import Change
from mlflow_stack.components.protocol import Finding, Step
from mlflow_stack.components.registry import Entry
from mlflow_stack.config.model import Settings
from mlflow_stack.progress import NullProgress

WAIT = 10.0  # a read waiting this long for another one means they ran one after the other


@dataclass
class Client:
    name: str
    log: list[str]

    def close(self) -> None:
        self.log.append(f"{self.name} closed")


@dataclass
class Observed:
    notes: list[str]


@dataclass
class FakeSystem:
    """A system whose read is `read` (it may wait for another system's read) and whose one
    step records its write."""

    name: str
    log: list[str]
    read: Callable[[], None] = lambda: None
    connects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def where(self, settings: Settings) -> str:
        return f"{self.name}-place"

    def connect(self, settings: Settings) -> Client:
        self.connects += 1
        return Client(self.name, self.log)

    def observe(self, client: Client, settings: Settings) -> Observed:
        self.read()
        with self.lock:
            self.log.append(f"{self.name} read")
        return Observed([f"{self.name} note"])

    def plan(self, client: Client, settings: Settings, observed: Any) -> list[Step]:
        return [Step(Change(self.name, "create", "thing"),
                     lambda _p: self.log.append(f"{self.name} write"))]

    def teardown(self, client: Client, settings: Settings, *, purge: bool) -> list[Step]:
        return []

    def check(self, settings: Settings) -> list[Finding]:
        return []


@dataclass(frozen=True)
class FakeEntry(Entry):
    fake: FakeSystem | None = None

    @property
    def system(self) -> Any:
        return self.fake


def entries(*systems: FakeSystem) -> list[Entry]:
    return [FakeEntry(s.name, "", lambda _s: None, False, s) for s in systems]


def waiting_for(event: threading.Event, what: str) -> Callable[[], None]:
    def read() -> None:
        assert event.wait(WAIT), f"{what} never happened: the reads did not run concurrently"
    return read


@pytest.mark.parametrize("walk", ["plan", "apply"])
def test_reads_overlap_but_are_reported_and_written_in_order(walk: str) -> None:
    log: list[str] = []
    second_read = threading.Event()
    # The first system's read ends only once the second's has: sequential reads would hang.
    first = FakeSystem("first", log, read=waiting_for(second_read, "the second read"))
    second = FakeSystem("second", log, read=second_read.set)
    progress = NullProgress()
    run = deploy.plan if walk == "plan" else deploy.apply
    results = run(Settings(), progress, entries(first, second))

    assert [r.system for r in results] == ["first", "second"]
    assert [r.where for r in results] == ["first-place", "second-place"]
    reads = ["first: read first-place", "second: read second-place"]
    if walk == "plan":
        assert progress.steps == reads
        assert log == ["second read", "first read", "first closed", "second closed"] or \
            log == ["second read", "first read", "second closed", "first closed"]
        return
    assert progress.steps == [*reads, "first: create thing", "second: create thing"]
    assert log[:4] == ["second read", "first read", "first write", "second write"]
    assert sorted(log[4:]) == ["first closed", "second closed"]
    assert progress.details == ["first note", "second note"]
    assert (first.connects, second.connects) == (1, 1)


def test_the_first_failure_in_order_is_raised_and_nothing_is_written() -> None:
    log: list[str] = []
    second_failed = threading.Event()

    def second_read() -> None:
        second_failed.set()
        raise RuntimeError("second refused")

    def first_read() -> None:
        # Fails after the second has: still the error the user sees, the first in order.
        waiting_for(second_failed, "the second read's failure")()
        raise RuntimeError("first refused")

    first = FakeSystem("first", log, read=first_read)
    second = FakeSystem("second", log, read=second_read)
    third = FakeSystem("third", log)
    progress = NullProgress()
    with pytest.raises(RuntimeError, match="first refused"):
        deploy.apply(Settings(), progress, entries(first, second, third))
    assert not [line for line in log if line.endswith("write")], log
    assert progress.steps == ["first: read first-place"]
    # Every client that was connected is closed, the failed systems' too.
    assert sorted(line for line in log if line.endswith("closed")) == [
        f"{s.name} closed" for s in (first, second, third) if s.connects]


def test_clients_connect_each_system_once_and_close_them_with_the_run() -> None:
    log: list[str] = []
    system = FakeSystem("one", log)
    with contextlib.ExitStack() as stack:
        clients = deploy.Clients(stack)
        client = clients.connect(system, Settings())
        assert clients.connect(system, Settings()) is client
        assert system.connects == 1 and log == []
    assert log == ["one closed"]
