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


# A listener that forks a worker sharing its socket, as gunicorn's master does.
_FORKING_LISTENER = """
import os, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
if os.fork() == 0:
    time.sleep(60); os._exit(0)
print("ready", flush=True); time.sleep(60)
"""


def test_the_server_s_own_workers_are_not_others_on_its_port(
        child: subprocess.Popen[bytes]) -> None:
    from harness.ports import free_port

    port = free_port()
    master = subprocess.Popen([sys.executable, "-c", _FORKING_LISTENER, str(port)],
                              stdout=subprocess.PIPE)
    try:
        assert master.stdout is not None and master.stdout.readline() == b"ready\n"
        tree = process.tree_pids(master.pid)
        # The socket is reported once, under one of the processes sharing it.
        holders = process.port_holders("127.0.0.1", port)
        assert len(tree) == 2 and holders and holders <= tree
        assert process.port_holders_besides(master.pid, "127.0.0.1", port) == set()
        # Seen from another server (any other process), they are others.
        assert process.port_holders_besides(child.pid, "127.0.0.1", port) == holders
    finally:
        for pid in process.tree_pids(master.pid) - {master.pid}:
            psutil.Process(pid).kill()
        master.kill()
        master.wait()


def test_listeners_are_read_before_the_tree_and_gone_ones_do_not_count(
        monkeypatch: pytest.MonkeyPatch, child: subprocess.Popen[bytes]) -> None:
    """The race seen in CI: a worker forked between reading the server's tree and reading the
    port's listeners counted as another process on the port (and `upgrade` refused)."""
    calls: list[str] = []
    gone = 2**22 + 12_345  # above pid_max: no such process
    forked_meanwhile = child.pid  # a worker appearing while the listeners are read

    def holders(host: str, port: int) -> set[int | None]:
        calls.append("listeners")
        return {forked_meanwhile, gone, None}

    def tree(pid: int) -> set[int]:
        calls.append("tree")
        return {pid, forked_meanwhile}  # read after: the new worker is in it

    monkeypatch.setattr(process, "port_holders", holders)
    monkeypatch.setattr(process, "tree_pids", tree)
    assert process.port_holders_besides(1, "127.0.0.1", 1) == {None}  # another user's socket
    assert calls == ["listeners", "tree"]
