"""run_alone finishes a coroutine even where asyncio.run refuses: inside a running loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from harness.loops import run_alone


async def _thread_name() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


def test_a_coroutine_runs_even_inside_a_running_loop() -> None:
    async def outer() -> str:
        inner = _thread_name()
        with pytest.raises(RuntimeError, match="running event loop"):
            asyncio.run(inner)  # what the tests met after a browser fixture started
        inner.close()
        return run_alone(_thread_name())

    name = run_alone(outer())
    assert name != threading.current_thread().name
