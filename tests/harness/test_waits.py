"""harness.waits: wait_until returns as soon as the condition holds, or its falsy last result
once the deadline has passed (having checked once more at the deadline); retry_while retries a
call through the errors it is told are transient, until a deadline."""

from __future__ import annotations

import time

import pytest

from harness.waits import retry_while, wait_until


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


def test_retry_while_retries_transient_errors_until_the_call_succeeds() -> None:
    outcomes: list[Exception | str] = [LookupError("not yet"), LookupError("not yet"), "done"]

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert retry_while(call, lambda e: isinstance(e, LookupError), timeout=30,
                       interval=0.01) == "done"
    assert outcomes == []


def test_retry_while_raises_other_errors_at_once_and_transient_ones_at_the_deadline() -> None:
    calls: list[float] = []

    def refused() -> None:
        calls.append(time.monotonic())
        raise LookupError("refused")

    with pytest.raises(LookupError):
        retry_while(refused, lambda e: isinstance(e, KeyError), timeout=30)
    assert len(calls) == 1  # not transient: no retry
    started = time.monotonic()
    with pytest.raises(LookupError):
        retry_while(refused, lambda e: isinstance(e, LookupError), timeout=0.3, interval=0.1)
    assert calls[-1] - started >= 0.3  # one last try at the deadline
