"""A test run stopped with SIGTERM still stops the services it started.

CI stops a job with SIGTERM (a timeout, a cancelled run). Python's default is to die at once:
no fixture teardown runs, and the services the harness started — each in its own process
group, so that its whole tree can be stopped — outlive the run (PostgreSQL, etcd,
kube-apiserver, JuiceFS were left running that way on 2026-12-05). Here the first SIGTERM
becomes a KeyboardInterrupt, which pytest handles as Ctrl-C: the run stops and the fixtures'
finalizers stop their services. A second SIGTERM kills at once, as before.
"""

from __future__ import annotations

import signal
from types import FrameType


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM is not to be delayed
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt in this (the main) thread."""
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_configure() -> None:  # as a plugin: pytest -p harness.interrupts
    stop_on_sigterm()
