"""How the Kubernetes system spreads its reads over threads (no cluster needed): results and
errors in order, several in flight at once, the first one alone (exec-plugin credentials)."""

from __future__ import annotations

import threading

import pytest

from mlflow_stack.components import kubernetes as k8s

WAIT = 10.0


def test_reads_overlap_and_come_back_in_order() -> None:
    everyone_in = threading.Barrier(3, timeout=WAIT)  # sequential reads would break it

    def read(i: int) -> int:
        if i > 0:
            everyone_in.wait()
        return i * 10

    assert k8s._read_all(read, [0, 1, 2, 3]) == [0, 10, 20, 30]


def test_the_first_read_runs_alone_unless_told_otherwise() -> None:
    first_done = threading.Event()
    seen_before_first: list[int] = []
    lock = threading.Lock()

    def read(i: int) -> int:
        if i == 0:
            # Give the others every chance to start early if they were allowed to.
            first_done.wait(0.2)
            first_done.set()
        elif not first_done.is_set():
            with lock:
                seen_before_first.append(i)
        return i

    assert k8s._read_all(read, list(range(6))) == list(range(6))
    assert seen_before_first == []

    released = threading.Event()

    def together(i: int) -> int:
        if i == 0:
            assert released.wait(WAIT), "the first read ran alone although told otherwise"
        else:
            released.set()
        return i

    assert k8s._read_all(together, [0, 1, 2], first_alone=False) == [0, 1, 2]


def test_the_first_failure_in_order_is_raised() -> None:
    second_failed = threading.Event()

    def read(i: int) -> int:
        if i == 2:
            second_failed.set()
            raise RuntimeError("read 2 failed")
        if i == 1:
            assert second_failed.wait(WAIT)
            raise RuntimeError("read 1 failed")
        return i

    with pytest.raises(RuntimeError, match="read 1 failed"):
        k8s._read_all(read, [0, 1, 2, 3])
