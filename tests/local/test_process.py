"""Which recorded server is still running (local/process.py): matched by its start in clock
ticks since boot, so a stepped wall clock (NTP, a VM's clock correction) does not make a live
server look gone — `down` then left it running and removed its record (seen in CI)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import psutil
import pytest

from mlflow_stack.local import process
from mlflow_stack.local.process import ServerRecord


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _record(pid: int) -> ServerRecord:
    return ServerRecord(pid=pid, create_time=psutil.Process(pid).create_time(), url="u",
                        port=1, started_at=0.0, metadata="m", artifacts="a", auth="none",
                        start_ticks=process.start_ticks(pid))


def test_a_live_server_stays_found_when_the_clock_is_stepped(
        child: subprocess.Popen[bytes]) -> None:
    record = _record(child.pid)
    assert record.start_ticks is not None and record.start_ticks == \
        process.start_ticks(child.pid)
    assert process.is_alive(record)
    # What a clock step does to psutil's create_time (boot time + ticks): it moves.
    stepped = replace(record, create_time=record.create_time - 42.0)
    assert process.is_alive(stepped)
    # A record without ticks (written before they were kept) falls back to create_time.
    assert not process.is_alive(replace(stepped, start_ticks=None))
    assert process.is_alive(replace(record, start_ticks=None))


def test_another_process_with_the_pid_is_not_the_server(child: subprocess.Popen[bytes]) -> None:
    record = _record(child.pid)
    assert record.start_ticks is not None
    assert not process.is_alive(replace(record, start_ticks=record.start_ticks + 1))
    child.kill()
    child.wait()
    assert not process.is_alive(record)
