"""kubernetes.gc: schedules, time zones and retentions as Kubernetes and `mlflow gc` take them,
and `config check` refusing bad ones with exit 2, naming the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cli.test_cli_errors import assert_refused, run_cli
from harness.kube import reference_settings
from mlflow_stack.config.cleanup import check_retention, check_schedule, check_time_zone
from mlflow_stack.config.loader import parse_settings
from mlflow_stack.errors import ConfigError

POSTGRES_S3 = {"database": {"backend": "postgresql", "host": "db.example.com"},
               "artifacts": {"backend": "s3"}}


@pytest.mark.parametrize("schedule", [
    "30 3 * * *", "*/15 * * * *", "0 0 1 1 *", "0 9-17/2 * * 1-5", "0 0 * JAN,jul SUN",
    "5/10 * ? * *", "0 0 31 12 6", "0  3 * *  *", "@daily", "@hourly", "@midnight", "@weekly",
    "@monthly", "@yearly", "@annually", "59 23 1,15 1-12 0-6", "0 0 * * mon-fri",
])
def test_schedules_kubernetes_accepts(schedule: str) -> None:
    assert check_schedule(schedule) == " ".join(schedule.split())


@pytest.mark.parametrize(("schedule", "why"), [
    ("30 3 * *", "has 4 field(s)"),
    ("0 0 * * * *", "has 6 field(s)"),  # seconds are not part of the standard parser
    ("60 * * * *", "minute: 60 is outside 0-59"),
    ("0 24 * * *", "hour: 24 is outside 0-23"),
    ("0 0 0 * *", "day of month: 0 is outside 1-31"),
    ("0 0 * 13 *", "month: 13 is outside 1-12"),
    ("0 0 * * 7", "day of week: 7 is outside 0-6"),  # robfig/cron: Sunday is 0 only
    ("*/0 * * * *", "step '0'"),
    ("0 5-1 * * *", "runs backwards"),
    ("0 0 L * *", "'L' is not a number"),
    ("0 0 * * 1#2", "not a number"),
    ("0 0 * * FOO", "'FOO' is not a number or a name"),
    ("0 0 1,,2 * *", "not a number"),
    ("@every 1h", "not a cron schedule"),
    ("@Daily", "not a cron schedule"),  # the macros are matched exactly
    ("TZ=UTC 0 3 * * *", "set kubernetes.gc.time_zone instead"),
    ("CRON_TZ=Europe/Berlin 0 3 * * *", "set kubernetes.gc.time_zone instead"),
    ("", "has 1 field(s)"),
])
def test_schedules_kubernetes_refuses(schedule: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        check_schedule(schedule)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires",
                                  "Etc/GMT+5"])
def test_time_zones(zone: str) -> None:
    assert check_time_zone(zone) == zone


@pytest.mark.parametrize("zone", ["Local", "local", "Mars/Olympus", "../etc/passwd", "",
                                  "Europe/-Berlin", "UTC "])
def test_bad_time_zones(zone: str) -> None:
    with pytest.raises(ValueError, match="IANA time zone"):
        check_time_zone(zone)


@pytest.mark.parametrize("value", ["30d", "12h", "1d12h30m", "90s", "1.5d", "0s"])
def test_retentions_mlflow_gc_parses(value: str) -> None:
    assert check_retention(value) == value


@pytest.mark.parametrize("value", ["", "30", "30 days", "1h1d", "1.2.3d", "-1d", "1w"])
def test_retentions_mlflow_gc_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        check_retention(value)


def test_gc_is_off_by_default() -> None:
    assert not reference_settings().kubernetes.gc.enabled


@pytest.mark.parametrize(("data", "needle"), [
    ({"kubernetes": {"gc": {"enabled": True}}},
     "kubernetes.gc.enabled needs database.backend: postgresql and artifacts.backend: s3"),
    ({"database": POSTGRES_S3["database"], "kubernetes": {"gc": {"enabled": True}}},
     "(local artifacts sit on the server's ReadWriteOnce volume"),
    ({**POSTGRES_S3, "kubernetes": {"gc": {"schedul": "@daily"}}}, "did you mean 'schedule'"),
    ({**POSTGRES_S3, "kubernetes": {"gc": {"successful_jobs_history": -1}}},
     "kubernetes.gc.successful_jobs_history"),
    ({**POSTGRES_S3, "kubernetes": {"gc": {"limits": {"cpu": "1", "memory": "1Gb"}}}},
     "kubernetes.gc.limits.memory"),
])
def test_bad_gc_settings_name_the_field(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_settings(data)


@pytest.mark.parametrize(("gc", "needle"), [
    ({"schedule": "0 3 * * 7"}, "kubernetes.gc.schedule: '0 3 * * 7' is not a cron schedule"),
    ({"time_zone": "Local"}, "kubernetes.gc.time_zone: 'Local'"),
    ({"retention": "30 days"}, "kubernetes.gc.retention: '30 days' is not a duration"),
])
def test_config_check_exits_2_naming_the_field(tmp_path: Path, gc: dict[str, str],
                                               needle: str) -> None:
    config = {**POSTGRES_S3, "kubernetes": {"gc": {"enabled": True, **gc}}}
    (tmp_path / "gc.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("config", "check", "-c", "gc.yaml", cwd=tmp_path,
                     env={"ADMIN_PASSWORD": "x", "AWS_ACCESS_KEY_ID": "a",
                          "AWS_SECRET_ACCESS_KEY": "b"})
    assert_refused(result, 2, needle)
