"""The steps of `verify` by name, in order, and what each one ends as."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "failed", "skipped"]

HEALTH = "server health"
TOKEN = "token"
EXPERIMENT = "create experiment"
RUN = "log params and metrics"
ARTIFACT = "artifact round trip"
MODEL = "log model"
REGISTER = "register model"
ALIAS_STAGE = "alias and stage"
PROMPT = "register and load prompt"
TRACE = "log and read trace"
ROLE = "mlflow-user refused admin call"
ANONYMOUS = "anonymous call refused"
CLEANUP = "clean-up"
STEPS = (HEALTH, TOKEN, EXPERIMENT, RUN, ARTIFACT, MODEL, REGISTER, ALIAS_STAGE, PROMPT, TRACE,
         ROLE, ANONYMOUS, CLEANUP)


@dataclass(frozen=True)
class StepResult:
    step: str
    status: Status
    detail: str
    seconds: float


def failed(results: list[StepResult]) -> list[StepResult]:
    return [r for r in results if r.status == "failed"]
