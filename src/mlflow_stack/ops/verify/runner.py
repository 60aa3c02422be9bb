# MLflow's client API is unannotated.
# mypy: disable-error-code="no-untyped-call"
"""One `verify` run: the steps in order, each skipped when a step it needs did not pass, the
clean-up always last."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.ops.verify import (
    access,
    artifact_round_trip,
    cleanup,
    genai,
    model_registry,
    sign_in,
    tracking,
)
from mlflow_stack.ops.verify.artifact_round_trip import ARTIFACT_BYTES
from mlflow_stack.ops.verify.context import HTTP_TIMEOUT, Verification, verify_option
from mlflow_stack.ops.verify.mlflow_scope import mlflow_scope
from mlflow_stack.ops.verify.steps import (
    ALIAS_STAGE,
    ANONYMOUS,
    ARTIFACT,
    EXPERIMENT,
    HEALTH,
    MODEL,
    PROMPT,
    REGISTER,
    ROLE,
    RUN,
    TOKEN,
    TRACE,
    StepResult,
)
from mlflow_stack.ops.verify.target import check_url


def run(url: str, settings: Settings | None = None, *,
        on_step: Callable[[StepResult], None] | None = None,
        artifact_bytes: int = ARTIFACT_BYTES,
        env: Mapping[str, str] | None = None) -> list[StepResult]:
    """Verify the server at url; one StepResult per step of STEPS, in order.

    settings: the platform's config (auth mode, Keycloak admin access for a temporary user);
    None for a bare URL. env: where the user's own credentials are looked up (default: the
    process environment). on_step is called with each result as soon as it is known.
    """
    if artifact_bytes <= 0:
        raise ConfigError("the artifact size must be positive")
    url = check_url(url)
    with (tempfile.TemporaryDirectory(prefix="mlflow-verify-") as work,
          httpx.Client(timeout=HTTP_TIMEOUT, verify=verify_option(),
                       follow_redirects=False) as http):
        v = Verification(url, settings, os.environ if env is None else env, artifact_bytes,
                         on_step, http, Path(work))
        with mlflow_scope(url) as set_token:
            v.set_token = set_token
            try:
                v.step(HEALTH, access.health)
                v.step(TOKEN, sign_in.token, needs=(HEALTH,))
                if v.auth_on is False and v.status(TOKEN) == "skipped":
                    after_token: tuple[str, ...] = (HEALTH,)
                else:
                    after_token = (HEALTH, TOKEN)
                v.step(EXPERIMENT, tracking.experiment, needs=after_token)
                v.step(RUN, tracking.params_and_metrics, needs=(EXPERIMENT,))
                v.step(ARTIFACT, artifact_round_trip.artifact, needs=(RUN,))
                v.step(MODEL, model_registry.model, needs=(RUN,))
                v.step(REGISTER, model_registry.register, needs=(MODEL,))
                v.step(ALIAS_STAGE, model_registry.alias_and_stage, needs=(REGISTER,))
                v.step(PROMPT, genai.prompt, needs=after_token)
                v.step(TRACE, genai.trace, needs=(EXPERIMENT,))
                v.step(ROLE, access.role_refused, needs=after_token)
                v.step(ANONYMOUS, access.anonymous, needs=after_token)
            finally:
                cleanup.cleanup(v)
    return v.results
