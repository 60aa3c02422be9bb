"""Read a config file (native YAML or the reference's inventory), validate it, attach secrets.

Every failure is a ConfigError naming the file, the field and what is expected.
"""

from __future__ import annotations

import codecs
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mlflow_stack.config.inventory import (
    PATH_TO_VARIABLE,
    inventory_to_native,
    looks_like_inventory,
)
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets, env_names
from mlflow_stack.errors import ConfigError

DEFAULT_CONFIG_NAME = "mlflow-stack.yaml"

# Byte-order marks of the Unicode encodings editors save in besides UTF-8 (UTF-32 first: its
# little-endian mark begins with UTF-16's).
_UNICODE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)

# Keys that look like secrets: refused in YAML with the variable to use instead.
_SECRET_KEYS = {
    "password": "admin_password",
    "admin_password": "admin_password",
    "db_password": "db_password",
    "access_key": "s3_access_key_id",
    "access_key_id": "s3_access_key_id",
    "secret_key": "s3_secret_access_key",
    "secret_access_key": "s3_secret_access_key",
    "client_secret": "oidc_client_secret",
    "robot_token": "harbor_robot_token",
    "token": "harbor_robot_token",
    "secrets": "admin_password",
}


@dataclass
class LoadedConfig:
    settings: Settings
    source: Path | None
    format: str  # "defaults" | "native" | "inventory"
    ignored_keys: list[str] = field(default_factory=list)


def default_env_files() -> list[Path]:
    """Dotenv files read for secrets: `MLFLOW_STACK_ENV_FILE` if set, else `~/.env`."""
    explicit = os.environ.get("MLFLOW_STACK_ENV_FILE")
    return [Path(explicit)] if explicit else [Path.home() / ".env"]


def find_config(path: Path | None, cwd: Path | None = None) -> Path | None:
    """The config to use: the given path (must exist) or ./mlflow-stack.yaml if present."""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist or is not a file")
        return path
    candidate = (cwd or Path.cwd()) / DEFAULT_CONFIG_NAME
    return candidate if candidate.is_file() else None


def load_config(
    path: Path | None = None,
    *,
    secrets: Secrets | None = None,
    require_secrets: bool = True,
    cwd: Path | None = None,
) -> LoadedConfig:
    """Load and validate settings; with no file, the embedded defaults."""
    source = find_config(path, cwd)
    if secrets is None:
        secrets = Secrets.load(default_env_files())
    loaded = LoadedConfig(Settings(), None, "defaults") if source is None else _load_file(source)
    loaded.settings = loaded.settings.model_copy(update={"secrets": secrets})
    if require_secrets:
        check_secrets(loaded.settings, source)
    return loaded


def check_secrets(settings: Settings, source: Path | None = None,
                  reported: tuple[str, ...] = ()) -> None:
    """ConfigError naming every required secret that is missing, except the `reported` ones
    (a caller that reports them itself)."""
    missing = [m for m in settings.missing_secrets() if m[0] not in reported]
    if missing:
        where = f"{source}: " if source else ""
        lines = [f"{what}: set {names}" for what, names in missing]
        raise ConfigError(
            f"{where}missing required secret(s): " + "; ".join(lines),
            hint="Secrets are read from the environment or ~/.env, never from the config file.",
        )


def parse_settings(data: Any, source: str = "config") -> LoadedConfig:
    """Validate already-parsed YAML data (a mapping) as either format."""
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else type(data).__name__
        raise ConfigError(
            f"{source}: expected a mapping of settings at the top level, got {kind}"
        )
    if looks_like_inventory(data):
        native, ignored = inventory_to_native(data)
        return LoadedConfig(_validate(native, source, inventory=True), None, "inventory", ignored)
    _refuse_secrets(data, source, ())
    return LoadedConfig(_validate(data, source, inventory=False), None, "native")


def _read_text(path: Path) -> str:
    """The file as text. YAML files are UTF-8; decoding them explicitly (not in the locale's
    encoding) makes a UTF-16, Latin-1 or binary file a clear error instead of a traceback."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    for bom, encoding in _UNICODE_BOMS:
        if data.startswith(bom):
            raise ConfigError(f"{path} is not UTF-8 text (it is {encoding}): save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}, "
            f"line {line}): save it as UTF-8"
        ) from None
    if "\0" in text:  # valid UTF-8, but binary data or UTF-16 without a byte-order mark
        offset = len(text[: text.index("\0")].encode())
        raise ConfigError(
            f"{path} is not UTF-8 text (NUL byte at offset {offset}): save it as UTF-8"
        )
    return text


def _load_file(path: Path) -> LoadedConfig:
    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if data is None:
        raise ConfigError(
            f"{path}: the file is empty; expected settings such as 'server:' or inventory "
            "variables such as 'mlflow_hostname:'"
        )
    loaded = parse_settings(data, str(path))
    loaded.source = path
    return loaded


def _refuse_secrets(data: dict[str, Any], source: str, loc: tuple[str, ...]) -> None:
    for key, value in data.items():
        secret_field = _SECRET_KEYS.get(str(key).lower())
        if secret_field:
            dotted = ".".join((*loc, str(key)))
            raise ConfigError(
                f"{source}: {dotted}: secrets are not read from the config file; "
                f"set {env_names(secret_field)} in the environment or ~/.env instead"
            )
        if isinstance(value, dict):
            _refuse_secrets(value, source, (*loc, str(key)))


def _validate(data: dict[str, Any], source: str, *, inventory: bool) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, inventory)) from None


def _format_errors(exc: ValidationError, source: str, inventory: bool) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        dotted = ".".join(loc) or "(top level)"
        name = PATH_TO_VARIABLE.get(dotted, dotted) if inventory else dotted
        if err["type"] == "extra_forbidden":
            lines.append(f"{name}: unknown setting{_suggest(loc)}")
            continue
        message = err["msg"].removeprefix("Value error, ")
        if not loc:  # a cross-field check: its message names the fields itself
            lines.append(message)
            continue
        if err["type"] != "value_error" and "input" in err and not isinstance(
            err["input"], dict | list
        ):
            message += f" (got {err['input']!r})"
        if inventory and isinstance(err.get("input"), str) and "{{" in err["input"]:
            message += "; Ansible templates are not expanded here: write the value itself"
        lines.append(f"{name}: {message}")
    return f"{source}: " + ("\n  ".join(lines) if len(lines) == 1 else "\n  " + "\n  ".join(lines))


def _suggest(loc: tuple[str, ...]) -> str:
    """A 'did you mean' for a misspelt key, from the fields allowed at that place."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        annotation = model.model_fields.get(part)
        sub = annotation.annotation if annotation else None
        # An optional section (`X | None`): the model inside it.
        sub = next((a for a in typing.get_args(sub) if a is not type(None)), sub)
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return ""
        model = sub
    allowed = [n for n in model.model_fields if n != "secrets"]
    close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; expected one of: {', '.join(allowed)}"
