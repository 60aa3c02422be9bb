"""`kubernetes.gc`: MLflow's garbage collection (`mlflow gc`) as a Kubernetes CronJob.

Deleting a run or an experiment in MLflow only marks it deleted; its metadata and artifacts stay
until `mlflow gc` removes them for good. The values are checked here the way Kubernetes and
MLflow check them, so a bad one fails `config check` instead of the CronJob or its first run:

- `schedule`: Kubernetes parses it with robfig/cron's standard parser (five fields, names of
  months and weekdays, `*`/`?`, ranges, steps, lists, and the `@hourly`...`@yearly` macros); it
  refuses `TZ=`/`CRON_TZ=` in the schedule (the `timeZone` field replaces them).
- `time_zone`: an IANA name Kubernetes can load (not `Local`).
- `retention`: what `mlflow gc --older-than` parses (`30d`, `12h`, `1d12h30m`).
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated

from pydantic import AfterValidator, Field

from mlflow_stack.config.section import Section
from mlflow_stack.config.types import Quantity

# robfig/cron (what the CronJob controller and the API server's validation use): field bounds
# of the standard parser, and the names it accepts. Day of week is 0-6 there (7 is refused).
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i for i, m in enumerate(_MONTHS, 1)}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(_DAYS)}))
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_CRON_HELP = ("expected five fields (minute hour day-of-month month day-of-week, e.g. "
              "'30 3 * * *') or one of " + ", ".join(_MACROS))
# mlflow gc's own pattern for --older-than (mlflow/cli/__init__.py, MLflow 3.17).
_RETENTION_RE = re.compile(r"^((?P<days>[\.\d]+?)d)?((?P<hours>[\.\d]+?)h)?"
                           r"((?P<minutes>[\.\d]+?)m)?((?P<seconds>[\.\d]+?)s)?$")
_NUMBER_RE = re.compile(r"[0-9]+")
# Kubernetes' check of each part of a timeZone (apis/batch/validation).
_TZ_PART_RE = re.compile(r"^[A-Za-z.\-_0-9+]{1,14}$")


def _value(text: str, bounds: tuple[int, int], names: dict[str, int], what: str) -> int:
    low, high = bounds
    number = names.get(text.lower())
    if number is None:
        if not _NUMBER_RE.fullmatch(text):
            raise ValueError(f"{what}: {text!r} is not a number"
                             + (f" or a name ({', '.join(names)})" if names else ""))
        number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{what}: {number} is outside {low}-{high}")
    return number


def _check_field(text: str, what: str, low: int, high: int, names: dict[str, int]) -> None:
    for part in text.split(","):
        span, slash, step = part.partition("/")
        if slash and not (_NUMBER_RE.fullmatch(step) and int(step) > 0):
            raise ValueError(f"{what}: step {step!r} in {part!r} is not a positive number")
        if span in ("*", "?"):
            continue
        first, dash, last = span.partition("-")
        start = _value(first, (low, high), names, what)
        end = _value(last, (low, high), names, what) if dash else start
        if start > end:
            raise ValueError(f"{what}: range {span!r} runs backwards")


def check_schedule(value: str) -> str:
    """A CronJob schedule the API server accepts (robfig/cron's standard parser)."""
    text = " ".join(value.split())
    if re.match(r"^(CRON_)?TZ=", text):
        raise ValueError(f"{value!r}: Kubernetes refuses TZ= or CRON_TZ= in a schedule; "
                         "set kubernetes.gc.time_zone instead")
    if text.startswith("@"):
        if text not in _MACROS:  # robfig/cron matches them exactly (lower case)
            raise ValueError(f"{value!r} is not a cron schedule: {_CRON_HELP}")
        return text
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(f"{value!r} has {len(fields)} field(s): {_CRON_HELP}")
    try:
        for part, (what, low, high, names) in zip(fields, _FIELDS, strict=True):
            _check_field(part, what, low, high, names)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a cron schedule ({exc}): {_CRON_HELP}") from None
    return text


def check_time_zone(value: str) -> str:
    """An explicit IANA time zone, as Kubernetes checks a CronJob's timeZone."""
    problem = None
    if value.lower() == "local":
        problem = "'Local' is the API server's zone, not an explicit one"
    elif any(p in (".", "..") or p.startswith("-") or not _TZ_PART_RE.match(p)
             for p in value.split("/")):
        problem = "not a time zone name"
    else:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problem = "unknown time zone"
    if problem:
        raise ValueError(f"{value!r}: {problem}: expected an IANA time zone name such as "
                         "UTC or Europe/Berlin")
    return value


def check_retention(value: str) -> str:
    """A duration `mlflow gc --older-than` parses: days, hours, minutes, seconds, in order."""
    text = value.strip()
    match = _RETENTION_RE.match(text)
    ok = bool(text) and match is not None
    if ok and match is not None:
        try:
            [float(v) for v in match.groupdict().values() if v]
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"{value!r} is not a duration: expected days, hours, minutes and "
                         "seconds in that order, e.g. 30d, 12h, 1d12h30m")
    return text


CronSchedule = Annotated[str, AfterValidator(check_schedule)]
TimeZone = Annotated[str, AfterValidator(check_time_zone)]
Retention = Annotated[str, AfterValidator(check_retention)]


class GcResources(Section):
    cpu: Quantity
    memory: Quantity


class GcSettings(Section):
    """Scheduled `mlflow gc`: permanently removes runs, experiments and logged models that were
    deleted longer than `retention` ago, with their artifacts. Off by default."""

    enabled: bool = Field(False, description="Render the CronJob (needs PostgreSQL and S3).")
    schedule: CronSchedule = Field(
        "30 3 * * *", description="When it runs (cron syntax or @daily etc.).")
    time_zone: TimeZone | None = Field(
        None, description="IANA time zone of the schedule (default: the controller's, "
        "usually UTC).")
    retention: Retention = Field(
        "30d", description="How long a deleted run, experiment or logged model is kept "
        "before gc removes it (mlflow gc --older-than).")
    successful_jobs_history: int = Field(3, ge=0, le=100)
    failed_jobs_history: int = Field(1, ge=0, le=100)
    deadline_seconds: int = Field(
        3600, ge=60, description="A run still going after this long is stopped.")
    requests: GcResources = Field(
        default_factory=lambda: GcResources(cpu="50m", memory="256Mi"))
    limits: GcResources = Field(
        default_factory=lambda: GcResources(cpu="500m", memory="512Mi"))


def check_gc(gc: GcSettings, *, database: str, artifacts: str) -> None:
    """gc runs in its own pod: the stores must be reachable from there."""
    if gc.enabled and (database != "postgresql" or artifacts != "s3"):
        what = "SQLite metadata" if database != "postgresql" else "local artifacts"
        raise ValueError(
            f"kubernetes.gc.enabled needs database.backend: postgresql and artifacts.backend: "
            f"s3 ({what} sit on the server's ReadWriteOnce volume, which a second pod must not "
            "write to); run gc by hand in the server pod instead (README, Operations)")
