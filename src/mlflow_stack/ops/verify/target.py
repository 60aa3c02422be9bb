"""Which server `verify` checks: --url, the local server of the state directory, or the
config's public URL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.local import process
from mlflow_stack.local.state import StateDir


@dataclass(frozen=True)
class Target:
    """The server to verify and why that one."""

    url: str
    source: str


def check_url(url: str) -> str:
    """A server URL given with --url, validated (ConfigError names the option)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--url {url!r} is not an http(s) URL",
                          hint="e.g. --url https://mlflow.example.com")
    if parts.query or parts.fragment:
        raise ConfigError(f"--url {url!r} must not have a query or fragment")
    return url.rstrip("/")


def resolve_target(settings: Settings | None, state: StateDir | None, url: str | None,
                   config_given: bool) -> Target:
    """Which server to verify.

    --url wins (and excludes a config). Otherwise the local server running for the state
    directory; failing that, the config's public URL (a deployed platform). Without a config
    and without a running local server there is nothing to verify: ConfigError.
    """
    if url is not None:
        if config_given:
            raise ConfigError("pass either --config/-c or --url, not both",
                              hint="-c verifies the platform of a config (its local server if "
                                   "one runs, else its public URL); --url any server")
        return Target(check_url(url), "--url")
    if state is not None:
        record = process.find_running(state).record
        if record is not None:
            return Target(record.url.rstrip("/"), f"local server of {state.root}")
    if not config_given or settings is None:
        where = state.root if state is not None else "the state directory"
        raise ConfigError(
            f"nothing to verify: no local server is running for {where}, and neither "
            "--config/-c nor --url was given",
            hint="start one with `mlflow-stack up`, or pass --url URL of a deployed platform "
                 "or -c CONFIG (its public URL is used when no local server runs)")
    return Target(settings.public_url.rstrip("/"), "public URL of the config")
