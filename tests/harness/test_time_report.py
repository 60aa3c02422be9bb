"""The per-module time report (harness/time_report.py) in a real pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WAITS = '''
import time


def test_waits():
    time.sleep(1.5)
'''

WORKS = '''
import time


def test_works():
    end = time.process_time() + 0.6
    while time.process_time() < end:
        pass


def test_quick():
    pass
'''


def _report(tmp_path: Path, plugin: bool) -> list[str]:
    (tmp_path / "test_waits.py").write_text(WAITS)
    (tmp_path / "test_works.py").write_text(WORKS)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
            str(tmp_path), "--basetemp", str(tmp_path / "basetemp"), "-o", "addopts=",
            str(tmp_path)]
    if plugin:
        argv[3:3] = ["-p", "harness.time_report"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    start = [i for i, line in enumerate(lines) if "time per test module" in line]
    return lines[start[0] + 2:start[0] + 4] if start else []


def test_each_module_has_its_wall_and_cpu_time(tmp_path: Path) -> None:
    # By name: which module took longer depends on the machine's load.
    rows = sorted((line.split() for line in _report(tmp_path, plugin=True)),
                  key=lambda row: row[-1])
    assert [row[-1] for row in rows] == ["test_waits.py", "test_works.py"], rows
    waits, works = ({"wall": float(r[0]), "cpu": float(r[2]), "tests": int(r[3])} for r in rows)
    assert waits["wall"] >= 1.4 and waits["cpu"] < 0.5 and waits["tests"] == 1
    assert works["cpu"] >= 0.5 and works["tests"] == 2


def test_without_the_plugin_there_is_no_report(tmp_path: Path) -> None:
    assert _report(tmp_path, plugin=False) == []
