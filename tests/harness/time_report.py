"""Where a test run's time goes, per test module, printed at the end of the run.

`--durations` names single tests; the suite's hour is spread over hundreds of them. Here each
module gets its wall time (setup, call and teardown of its tests, including a session service
its first test starts) and the CPU time of this pytest process in it: a module whose wall time
is far above its CPU time waits, on a service, a subprocess or a sleep.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass

import pytest

SHOWN = 15


@dataclass
class Spent:
    wall: float = 0.0
    cpu: float = 0.0
    tests: int = 0


class ModuleTimes:
    def __init__(self) -> None:
        self.modules: dict[str, Spent] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, None, None]:
        wall, cpu = time.monotonic(), time.process_time()
        yield
        spent = self.modules.setdefault(item.nodeid.split("::", 1)[0], Spent())
        spent.wall += time.monotonic() - wall
        spent.cpu += time.process_time() - cpu
        spent.tests += 1

    def lines(self) -> list[str]:
        total = sum(s.wall for s in self.modules.values())
        if not self.modules or total <= 0:
            return []
        ranked = sorted(self.modules.items(), key=lambda kv: kv[1].wall, reverse=True)
        out = [f"{'wall s':>8} {'share':>6} {'CPU s':>7} {'tests':>5}  module"]
        for module, s in ranked[:SHOWN]:
            out.append(f"{s.wall:8.1f} {s.wall / total:6.1%} {s.cpu:7.1f} {s.tests:5d}  {module}")
        rest = ranked[SHOWN:]
        if rest:
            out.append(f"{sum(s.wall for _, s in rest):8.1f} "
                       f"{sum(s.wall for _, s in rest) / total:6.1%} "
                       f"{sum(s.cpu for _, s in rest):7.1f} "
                       f"{sum(s.tests for _, s in rest):5d}  {len(rest)} other modules")
        return out

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        shown = self.lines()
        if shown:
            terminalreporter.write_sep("=", "time per test module (this process's CPU beside it)")
            for line in shown:
                terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:  # as a plugin: pytest -p harness.time_report
    if not config.pluginmanager.has_plugin("module-times"):
        config.pluginmanager.register(ModuleTimes(), "module-times")
