# MLflow's client API is unannotated.
# mypy: disable-error-code="no-untyped-call"
"""Clean-up: what the run created is deleted (registered model, prompt, traces, artifacts, logged
models, run, experiment), and the temporary Keycloak user is removed whatever happened before."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

from mlflow_stack.ops.verify.context import StepFailed, Verification, describe, is_not_found
from mlflow_stack.ops.verify.steps import CLEANUP


def cleanup(v: Verification) -> None:
    """Remove what the run created; always runs, and always removes the temporary user.

    Failed when the experiment, run, trace, prompt, logged or registered model or the
    temporary user cannot be deleted. Artifacts are deleted too (MLflow itself keeps them until
    `mlflow gc`); artifacts the server cannot delete are named in the detail as left
    behind, without failing the step.
    """
    start = time.monotonic()
    done: list[str] = []
    problems: list[str] = []
    left: list[str] = []
    try:
        with contextlib.suppress(Exception):
            v.refresh_token()
        cleanup_mlflow(v, done, problems, left)
    finally:
        if v.identity is not None and v.identity.remove is not None:
            try:
                done.append(v.identity.remove())
            except Exception as exc:
                problems.append(f"temporary user not removed: {describe(exc)}")
        parts = problems + ([f"left behind: {', '.join(left)}"] if left else []) + done
        v.record(CLEANUP, "failed" if problems else "ok",
                 "; ".join(parts) or "nothing to remove", time.monotonic() - start)


def cleanup_mlflow(v: Verification, done: list[str], problems: list[str], left: list[str]) -> None:
    if v.experiment_id is None and not v.registered and v.prompt_version is None:
        return
    client = v.client()

    def attempt(what: str, action: Callable[[], object]) -> bool:
        """One deletion; a thing that is already gone counts as deleted."""
        try:
            action()
        except Exception as exc:
            if is_not_found(exc):
                return True
            problems.append(f"{what}: {describe(exc)}")
            return False
        return True

    def delete_artifacts(uri: str) -> bool:
        from mlflow.store.artifact.artifact_repository_registry import (
            get_artifact_repository,
        )

        try:
            get_artifact_repository(uri).delete_artifacts()
        except Exception as exc:
            if not is_not_found(exc):
                left.append(f"artifacts at {uri} (delete refused: {describe(exc)})")
                return False
        return True

    name = v.name
    if v.registered and attempt(
            f"delete registered model {name}", lambda: client.delete_registered_model(name)
    ) and attempt(f"registered model {name}",
                  lambda: expect_gone(lambda: client.get_registered_model(name))):
        done.append(f"registered model {name} deleted")
    prompt, prompt_version = v.prompt_name, v.prompt_version
    if prompt_version is not None and attempt(
            f"delete prompt version {prompt}/{prompt_version}",
            lambda: client.delete_prompt_version(prompt, prompt_version)
    ) and attempt(f"delete prompt {prompt}", lambda: client.delete_prompt(prompt)) and attempt(
            f"prompt {prompt}", lambda: expect_gone(lambda: client.get_registered_model(prompt))):
        done.append(f"prompt {prompt} deleted")
    models: list[Any] = []
    experiment_id = v.experiment_id
    trace_id = v.trace_id
    if experiment_id is not None and trace_id is not None and attempt(
            f"delete trace {trace_id}",
            lambda: client.delete_traces(experiment_id, trace_ids=[trace_id])):
        done.append("trace deleted")
    if experiment_id is not None:
        attempt("list logged models", lambda: models.extend(
            client.search_logged_models(experiment_ids=[experiment_id])))
    deleted_models = 0
    for m in models:
        model_id = str(m.model_id)
        delete_artifacts(str(m.artifact_location))
        if attempt(f"delete logged model {model_id}",
                   functools.partial(client.delete_logged_model, model_id)):
            deleted_models += 1
    if deleted_models:
        done.append(f"{deleted_models} logged model(s) deleted")
    run_id, run_uri = v.run_id, v.run_artifact_uri
    if run_id is not None and run_uri is not None:
        if v.artifact_attempted and delete_artifacts(run_uri):
            done.append("run artifacts deleted")
        if attempt(f"delete run {run_id}", lambda: client.delete_run(run_id)):
            done.append("run deleted")
    if experiment_id is not None and attempt(
            f"delete experiment {name}", lambda: client.delete_experiment(experiment_id)):
        stage = client.get_experiment(experiment_id).lifecycle_stage
        if stage != "deleted":
            problems.append(f"experiment {name} is still {stage} after delete")
        else:
            done.append(f"experiment {name} deleted")


def expect_gone(read: Callable[[], object]) -> None:
    try:
        read()
    except Exception as exc:
        if is_not_found(exc):
            return
        raise
    raise StepFailed("still there after delete")
