"""Waiting for something asynchronous with a deadline, instead of a fixed sleep: a log line that
is written after the response, a token or URL that expires, a cache or informer that catches up.
Returns as soon as the condition holds, so a quiet machine does not pay for a loaded one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.25) -> T:
    """Call predicate until it returns something truthy or `timeout` seconds have passed, and
    return its last result (falsy when the deadline passed first): `assert wait_until(...), why`.
    It is called once more at the deadline, so a slow last step still counts."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        left = deadline - time.monotonic()
        if result or left <= 0:
            return result
        time.sleep(min(interval, left))


def retry_while(call: Callable[[], T], transient: Callable[[Exception], bool], timeout: float,
                interval: float = 0.25) -> T:
    """Return call()'s result, calling it again while it raises an exception `transient`
    accepts (a change not yet visible: an informer, a cache). Any other exception, and a
    transient one once `timeout` seconds have passed, is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception as exc:
            left = deadline - time.monotonic()
            if not transient(exc) or left <= 0:
                raise
        time.sleep(min(interval, left))
