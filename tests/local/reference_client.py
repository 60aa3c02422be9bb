"""The reference's "Python Client Usage" and "Model Registry" examples, run as a user would.

Run with only MLFLOW_TRACKING_URI set (no storage credentials). `write` logs and registers;
`check` verifies everything is still there (after a restart) and prints a JSON summary.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

X = np.array([[0.0, 0.1], [0.2, 0.0], [0.9, 1.0], [1.0, 0.8]])
Y = np.array([0, 0, 1, 1])


def write() -> dict[str, object]:
    model = LogisticRegression().fit(X, Y)
    # --- reference example, verbatim apart from the tracking URI coming from the env ---
    mlflow.create_experiment("my-experiment")
    mlflow.set_experiment("my-experiment")
    with mlflow.start_run() as run:
        mlflow.log_param("learning_rate", 0.01)
        mlflow.log_param("batch_size", 32)
        mlflow.log_metric("accuracy", 0.95)
        mlflow.log_metric("loss", 0.05)
        mlflow.sklearn.log_model(model, "model")
        with tempfile.TemporaryDirectory() as tmp:
            note = Path(tmp) / "notes.txt"
            note.write_text("artifact round trip\n")
            mlflow.log_artifact(str(note))
    run_id = run.info.run_id
    version = mlflow.register_model(model_uri=f"runs:/{run_id}/model", name="my-model")
    client = MlflowClient()
    client.transition_model_version_stage(name="my-model", version=version.version,
                                          stage="Production")
    client.set_registered_model_alias("my-model", "champion", version.version)
    return {"run_id": run_id, "experiment_id": run.info.experiment_id,
            "version": version.version}


def check() -> dict[str, object]:
    client = MlflowClient()
    exp = mlflow.get_experiment_by_name("my-experiment")
    assert exp is not None, "experiment lost"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, f"expected 1 run, found {len(runs)}"
    run = runs[0]
    assert run.data.params == {"learning_rate": "0.01", "batch_size": "32"}, run.data.params
    assert run.data.metrics == {"accuracy": 0.95, "loss": 0.05}, run.data.metrics
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="notes.txt", dst_path=tmp)
        assert Path(path).read_text() == "artifact round trip\n"
    mv = client.get_model_version_by_alias("my-model", "champion")
    assert mv.current_stage == "Production", mv.current_stage
    loaded = mlflow.sklearn.load_model("models:/my-model@champion")
    predictions = loaded.predict(X).tolist()
    assert predictions == Y.tolist(), predictions
    return {"run_id": run.info.run_id, "experiment_id": exp.experiment_id,
            "version": mv.version, "artifact_uri": run.info.artifact_uri}


if __name__ == "__main__":
    result = write() if sys.argv[1] == "write" else check()
    print("RESULT " + json.dumps(result))
