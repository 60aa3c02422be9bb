"""Which server `verify` checks: --url, the running local server of a state directory, or the
config's public URL; and the errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.verify import target

pytestmark = pytest.mark.integration  # open_platform runs a local server


def test_target_resolution(open_platform: tuple[Settings, StateDir], tmp_path: Path) -> None:
    settings, state = open_platform
    empty = StateDir(tmp_path / "empty")
    assert target.resolve_target(Settings(), state, None, config_given=False).url == \
        settings.local_url
    assert target.resolve_target(settings, state, None, config_given=True).source.startswith(
        "local server of")
    deployed = Settings.model_validate({"server": {"hostname": "mlflow.example.com"}})
    assert target.resolve_target(deployed, empty, None, config_given=True).url == \
        "https://mlflow.example.com"
    assert target.resolve_target(None, None, "http://h:5000/", config_given=False).url == \
        "http://h:5000"
    with pytest.raises(ConfigError, match="--config/-c or --url, not both"):
        target.resolve_target(settings, state, "http://h:5000", config_given=True)
    with pytest.raises(ConfigError, match="no local server is running") as info:
        target.resolve_target(Settings(), empty, None, config_given=False)
    assert "--url" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="--url 'ftp://h' is not an http"):
        target.resolve_target(None, None, "ftp://h", config_given=False)
