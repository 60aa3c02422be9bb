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
