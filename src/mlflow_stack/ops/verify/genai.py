# MLflow's client API is unannotated.
# mypy: disable-error-code="no-untyped-call"
"""The GenAI steps: a prompt registered and loaded back from the prompt registry, and a trace
logged (MLflow's client sends its spans over OTLP, ``/v1/traces``) and read back."""

from __future__ import annotations

import time
from typing import Any

from mlflow_stack.ops.verify.context import StepFailed, Verification, describe

PROMPT_TEMPLATE = "Summarise {{text}} for {{audience}}."
TRACE_INPUT = {"question": "does tracing work?"}
TRACE_WAIT_SECONDS = 30.0  # the client may still be sending the spans (in the background)


def prompt(v: Verification) -> str:
    import mlflow

    registered = mlflow.genai.register_prompt(
        name=v.prompt_name, template=PROMPT_TEMPLATE, commit_message="mlflow-stack verify")
    v.prompt_version = str(registered.version)
    loaded = mlflow.genai.load_prompt(f"prompts:/{v.prompt_name}/{v.prompt_version}",
                                      link_to_model=False, cache_ttl_seconds=0)
    if loaded.template != PROMPT_TEMPLATE:
        raise StepFailed(f"prompt {v.prompt_name} loaded back as {loaded.template!r}")
    filled = loaded.format(text="the logs", audience="operators")
    if filled != "Summarise the logs for operators.":
        raise StepFailed(f"prompt {v.prompt_name} formats as {filled!r}")
    return f"prompt {v.prompt_name} version {v.prompt_version} registered and loaded"


def trace(v: Verification) -> str:
    import mlflow

    span = mlflow.start_span_no_context("verify", span_type="CHAIN", inputs=TRACE_INPUT,
                                        experiment_id=v.experiment_id)
    child = mlflow.start_span_no_context("verify-step", parent_span=span, inputs="step")
    child.end(outputs="done")
    span.end(outputs={"answer": "yes"})
    v.trace_id = span.trace_id
    mlflow.flush_trace_async_logging()
    got = read_back(v, v.trace_id)
    names = sorted(s.name for s in got.data.spans)
    if names != ["verify", "verify-step"]:
        raise StepFailed(f"trace {v.trace_id} read back with spans {names}")
    root = next(s for s in got.data.spans if s.parent_id is None)
    if root.inputs != TRACE_INPUT or root.outputs != {"answer": "yes"}:
        raise StepFailed(f"trace {v.trace_id} read back with inputs {root.inputs!r}")
    if str(got.info.experiment_id) != str(v.experiment_id):
        raise StepFailed(f"trace {v.trace_id} landed in experiment {got.info.experiment_id}")
    return f"trace {v.trace_id}: 2 spans read back"


def read_back(v: Verification, trace_id: str) -> Any:
    """The trace once the server has all of it (its info and its two spans)."""
    client = v.client()
    deadline = time.monotonic() + TRACE_WAIT_SECONDS
    while True:
        try:
            got = client.get_trace(trace_id, display=False)
            if got is not None and len(got.data.spans) >= 2:
                return got
            problem = "it has not arrived"
        except Exception as exc:  # not there yet, or its spans still arriving
            problem = describe(exc)
        if time.monotonic() >= deadline:
            raise StepFailed(f"trace {trace_id} cannot be read back after "
                             f"{TRACE_WAIT_SECONDS:g} s: {problem}")
        time.sleep(0.5)
