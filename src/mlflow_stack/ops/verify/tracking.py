# MLflow's client API is unannotated.
# mypy: disable-error-code="no-untyped-call"
"""The tracking steps: an experiment created and read back, a run's params and metric history
logged and read back."""

from __future__ import annotations

import time

from mlflow_stack.ops.verify.context import StepFailed, Verification


def experiment(v: Verification) -> str:
    client = v.client()
    v.experiment_id = client.create_experiment(v.name, tags={"mlflow-stack": "verify"})
    got = client.get_experiment_by_name(v.name)
    if got is None or got.experiment_id != v.experiment_id:
        raise StepFailed(f"experiment {v.name} was created but cannot be read back")
    return f"experiment {v.name} (id {v.experiment_id})"


def params_and_metrics(v: Verification) -> str:
    from mlflow.entities import Metric, Param

    client = v.client()
    run = client.create_run(v.experiment_id, run_name="verify")
    v.run_id, v.run_artifact_uri = run.info.run_id, run.info.artifact_uri
    now = int(time.time() * 1000)
    params = {"learning_rate": "0.01", "layers": "3"}
    metrics = [Metric("accuracy", value, now + i, i)
               for i, value in enumerate((0.5, 0.75, 0.95))]
    client.log_batch(v.run_id, metrics=metrics,
                     params=[Param(k, value) for k, value in params.items()])
    data = client.get_run(v.run_id).data
    history = [m.value for m in client.get_metric_history(v.run_id, "accuracy")]
    if data.params != params:
        raise StepFailed(f"params read back as {data.params}, logged {params}")
    if sorted(history) != [0.5, 0.75, 0.95] or data.metrics.get("accuracy") != 0.95:
        raise StepFailed(f"metric history read back as {history}")
    client.set_terminated(v.run_id)
    return f"run {v.run_id}: {len(params)} params, 3 metric steps read back"
