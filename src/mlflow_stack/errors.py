"""Errors the library raises; the CLI maps them to exit codes and one readable message."""

from __future__ import annotations


class StackError(Exception):
    """Something a user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(StackError):
    """Bad input (config file, option or environment): refused before anything changes."""

    exit_code = 2


class ServiceUnreachable(StackError):
    """An external service (PostgreSQL, S3, Keycloak) cannot be reached or refused us."""

    exit_code = 1


class ServerError(StackError):
    """The MLflow server failed to start, stop or answer."""

    exit_code = 1
