# MLflow's client API is unannotated.
# mypy: disable-error-code="no-untyped-call"
"""The model steps: a model logged from code, registered, given an alias and a stage."""

from __future__ import annotations

import textwrap
import warnings

from mlflow_stack.ops.verify.context import StepFailed, Verification

ALIAS = "verify"
STAGE = "Staging"

MODEL_CODE = '''\
"""A trivial model logged by mlflow-stack verify (models from code: nothing pickled)."""
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return model_input


mlflow.models.set_model(Echo())
'''


def model(v: Verification) -> str:
    import mlflow

    code = v.work / "verify_model.py"
    code.write_text(textwrap.dedent(MODEL_CODE))
    with mlflow.start_run(run_id=v.run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code),
            pip_requirements=[f"mlflow=={mlflow.__version__}"])
    v.model_uri, v.model_id = info.model_uri, info.model_id
    files = {f.path for f in v.client().list_logged_model_artifacts(v.model_id)}
    if "MLmodel" not in files:
        raise StepFailed(f"logged model {v.model_id} has no MLmodel file ({files})")
    return f"{v.model_uri} ({len(files)} files)"


def register(v: Verification) -> str:
    client = v.client()
    client.create_registered_model(v.name, description="mlflow-stack verify")
    v.registered = True
    mv = client.create_model_version(v.name, source=v.model_uri, run_id=v.run_id,
                                     model_id=v.model_id, await_creation_for=60)
    v.version = str(mv.version)
    if mv.status != "READY":
        raise StepFailed(f"version {mv.version} of {v.name} is {mv.status}, not READY")
    return f"registered model {v.name} version {v.version}"


def alias_and_stage(v: Verification) -> str:
    client = v.client()
    client.set_registered_model_alias(v.name, ALIAS, v.version)
    by_alias = client.get_model_version_by_alias(v.name, ALIAS)
    if str(by_alias.version) != v.version:
        raise StepFailed(f"alias {ALIAS} points at version {by_alias.version}, "
                         f"set to {v.version}")
    with warnings.catch_warnings():  # stages are deprecated, still served
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(v.name, v.version, STAGE)
    stage = client.get_model_version(v.name, v.version).current_stage
    if stage != STAGE:
        raise StepFailed(f"version {v.version} is in stage {stage}, not {STAGE}")
    return f"alias @{ALIAS} -> version {v.version}, stage {STAGE}"
