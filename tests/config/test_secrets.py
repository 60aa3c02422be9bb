"""Secrets come from the environment or a dotenv file, never from YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_stack.config.secrets import Secrets


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", "from-env")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")
    s = Secrets.load([])
    assert s.admin_password is not None and s.admin_password.get_secret_value() == "from-env"
    assert s.s3_access_key_id is not None and s.s3_access_key_id.get_secret_value() == "AKIA"
    assert "from-env" not in repr(s)
    assert s.sources()["admin_password"] == "ADMIN_PASSWORD"


def test_dotenv_file_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"
    env.write_text("HARBOR_ROBOT_TOKEN=tok-from-file\nADMIN_PASSWORD=file-pw\n")
    monkeypatch.delenv("HARBOR_ROBOT_TOKEN", raising=False)
    monkeypatch.setenv("ADMIN_PASSWORD", "env-pw")
    s = Secrets.load([env])
    assert s.harbor_robot_token is not None
    assert s.harbor_robot_token.get_secret_value() == "tok-from-file"
    assert s.admin_password is not None and s.admin_password.get_secret_value() == "env-pw"


def test_missing_dotenv_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARBOR_ROBOT_TOKEN", raising=False)
    assert Secrets.load([tmp_path / "nope.env"]).harbor_robot_token is None


def test_specific_variable_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "generic")
    monkeypatch.setenv("MLFLOW_STACK_S3_ACCESS_KEY_ID", "specific")
    s = Secrets.load([])
    assert s.s3_access_key_id is not None
    assert s.s3_access_key_id.get_secret_value() == "specific"
