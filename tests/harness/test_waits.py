"""harness.waits.wait_until: returns as soon as the condition holds, or its falsy last result
once the deadline has passed (having checked once more at the deadline)."""

from __future__ import annotations

import time

from harness.waits import wait_until


def test_returns_the_first_truthy_result_without_waiting_out_the_timeout() -> None:
    calls = iter([0, 0, 7, 9])
    started = time.monotonic()
    assert wait_until(lambda: next(calls), timeout=30, interval=0.01) == 7
    assert time.monotonic() - started < 5


def test_returns_the_falsy_result_at_the_deadline() -> None:
    seen: list[float] = []

    def never() -> list[int]:
        seen.append(time.monotonic())
        return []

    started = time.monotonic()
    assert wait_until(never, timeout=0.3, interval=0.1) == []
    assert seen[-1] - started >= 0.3  # one last check at the deadline
    assert 3 <= len(seen) <= 10
