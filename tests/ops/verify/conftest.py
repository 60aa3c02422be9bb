"""The platform the verify tests share: embedded defaults on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.ports import free_port
from mlflow_stack.config.model import Settings
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress


@pytest.fixture(scope="package")
def open_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings,
                                                                             StateDir]]:
    """Embedded defaults (SQLite, local artifact folder, no auth) on a free port."""
    settings = Settings.model_validate({"server": {"port": free_port()}})
    state = StateDir(tmp_path_factory.mktemp("verify-open") / "state")
    platform.up(settings, state, NullProgress())
    try:
        yield settings, state
    finally:
        platform.down(state)
