# MLflow's client API is unannotated.
# mypy: disable-error-code="no-untyped-call"
"""One run of `verify`: its state (what it checks, with which identity, what it has created so
far), the step bookkeeping, and how a step's failure is worded."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.ops.verify.credentials import TEMP_PREFIX, Identity
from mlflow_stack.ops.verify.steps import Status, StepResult

HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class StepFailed(Exception):
    """A step's check did not hold (the message is the step's detail)."""


class Skip(Exception):
    """A step that does not apply (the message says why)."""


def describe(exc: BaseException) -> str:
    """One line for a result: what went wrong, never a token."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, StackError):
        text = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    elif isinstance(exc, MlflowException):
        text = exc.message
        status = re.search(r"too many (\d{3}) error responses", text)
        if status:  # MLflow's retries ran out: the host and pool details add nothing
            called = re.search(r"API request to (\S+) failed", text)
            path = f" to {urlsplit(called.group(1)).path}" if called else ""
            text = f"HTTP {status.group(1)} from the server{path} (its log says why)"
    elif isinstance(exc, StepFailed | Skip):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Say which part of a step failed."""
    try:
        yield
    except Exception as exc:
        raise StepFailed(f"{name}: {describe(exc)}") from exc


def verify_option() -> ssl.SSLContext | str:
    """TLS trust for our own HTTP calls: MLflow's server-cert variable, else the system store."""
    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return cert if cert else ssl.create_default_context()


def is_not_found(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


@dataclass
class Verification:
    """One run: what it checks, with what, and what it has made so far."""

    url: str
    settings: Settings | None
    env: Mapping[str, str]
    artifact_bytes: int
    on_step: Callable[[StepResult], None] | None
    http: httpx.Client
    work: Path
    results: list[StepResult] = field(default_factory=list)
    identity: Identity | None = None
    auth_on: bool | None = None  # None: unknown yet
    auth_off_reason: str = ""
    set_token: Callable[[str | None], None] = lambda _token: None
    name: str = field(default_factory=lambda: f"{TEMP_PREFIX}{secrets.token_hex(4)}")
    experiment_id: str | None = None
    run_id: str | None = None
    run_artifact_uri: str | None = None
    model_uri: str | None = None
    model_id: str | None = None
    version: str | None = None
    registered: bool = False
    prompt_version: str | None = None  # set once the prompt exists
    trace_id: str | None = None
    artifact_attempted: bool = False

    @property
    def prompt_name(self) -> str:
        """The prompt's name (prompts are registered models: not the model's name)."""
        return f"{self.name}-prompt"

    # -- step bookkeeping ------------------------------------------------------------------------

    def status(self, step: str) -> Status | None:
        for r in self.results:
            if r.step == step:
                return r.status
        return None

    def record(self, step: str, status: Status, detail: str, seconds: float) -> None:
        result = StepResult(step, status, detail, round(seconds, 2))
        self.results.append(result)
        if self.on_step is not None:
            self.on_step(result)

    def step(self, name: str, body: Callable[[Verification], str],
             needs: tuple[str, ...] = ()) -> None:
        """Run one step's body on this run and record how it ended."""
        for need in needs:
            if self.status(need) != "ok":
                how = "failed" if self.status(need) == "failed" else "was skipped"
                self.record(name, "skipped", f"needs '{need}', which {how}", 0.0)
                return
        start = time.monotonic()
        try:
            self.refresh_token()
            detail = body(self)
        except Skip as exc:
            self.record(name, "skipped", str(exc), time.monotonic() - start)
        except Exception as exc:
            self.record(name, "failed", describe(exc), time.monotonic() - start)
        else:
            self.record(name, "ok", detail, time.monotonic() - start)

    def refresh_token(self) -> None:
        """The identity's current token for MLflow (a manager renews it near expiry)."""
        self.set_token(self.identity.token() if self.identity is not None else None)

    def headers(self) -> dict[str, str]:
        return ({"Authorization": f"Bearer {self.identity.token()}"}
                if self.identity is not None else {})

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)
