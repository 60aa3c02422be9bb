"""The reference's "Python Client Usage" and "Model Registry" examples, run as a user would.

Only environment variables are set (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_AUTH=keycloak and the
credentials); there is no token step. The examples are verbatim except that `model` is defined
first and the tracking URI comes from MLFLOW_TRACKING_URI (what `set_tracking_uri` would set).
Then, with `argv[1]` seconds > 0, it keeps logging metrics to the run for that long, across
several access-token lifetimes, and prints a JSON summary including the plugin's token-endpoint
calls per grant type.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

model = LogisticRegression().fit(np.array([[0.0, 0.1], [0.9, 1.0]]), np.array([0, 1]))
experiment_name = sys.argv[2] if len(sys.argv) > 2 else "my-experiment"

# --- "Python Client Usage", verbatim (tracking URI from the environment) ---------------------
import mlflow  # noqa: E402

# Create experiment
mlflow.create_experiment(experiment_name)
mlflow.set_experiment(experiment_name)

# Start a run
with mlflow.start_run() as run:
    # Log parameters
    mlflow.log_param("learning_rate", 0.01)
    mlflow.log_param("batch_size", 32)

    # Log metrics
    mlflow.log_metric("accuracy", 0.95)
    mlflow.log_metric("loss", 0.05)

    # Log model
    mlflow.sklearn.log_model(model, "model")

# --- "Model Registry", verbatim ---------------------------------------------------------------
run_id = run.info.run_id
version = mlflow.register_model(model_uri=f"runs:/{run_id}/model", name=f"{experiment_name}-model")

from mlflow.tracking import MlflowClient  # noqa: E402

client = MlflowClient()
client.transition_model_version_stage(name=f"{experiment_name}-model", version=version.version,
                                      stage="Production")

# --- keep working across token expiry ----------------------------------------------------------
seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
started = time.monotonic()
steps = 0
with mlflow.start_run(run_id=run_id):
    while time.monotonic() - started < seconds:
        mlflow.log_metric("loss", 1.0 / (steps + 1), step=steps)
        steps += 1
        time.sleep(0.2)

# Read back: tracking, registry and artifact reads all carry the token.
logged = client.get_metric_history(run_id, "loss")
loaded = mlflow.sklearn.load_model(f"models:/{experiment_name}-model/{version.version}")
assert loaded.predict(np.array([[1.0, 1.0]])).tolist() == [1]

from mlflow_stack.client import auth_provider  # noqa: E402

grants: dict[str, int] = {}
for manager in auth_provider._managers.values():
    for grant, count in manager.requests_by_grant.items():
        grants[grant] = grants.get(grant, 0) + count
print("RESULT " + json.dumps({"run_id": run_id, "steps": steps, "logged": len(logged),
                              "version": version.version, "grants": grants}))
