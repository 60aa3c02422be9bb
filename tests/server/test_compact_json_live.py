"""Compact JSON on live servers (server/patches/compact_json.py): the platform without SSO
(MLflow's app through ours) and with SSO (mlflow-oidc-auth's app, its search filters included,
as a user who is no admin). MLflow's Python client reads everything back; the UI's calls
(``/ajax-api``) answer MLflow's compact form of the same values the pretty form carried.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from mlflow.protos.model_registry_pb2 import SearchRegisteredModels
from mlflow.protos.service_pb2 import GetRun, SearchRuns
from mlflow.tracking import MlflowClient
from mlflow.utils.proto_json_utils import message_to_json, parse_dict

from harness.keycloak import KeycloakServer
from harness.ports import free_port
from harness.sso import USER_ROLE, provision_realm, running, sso_settings
from mlflow_stack.config.model import Settings

pytestmark = pytest.mark.integration
BIG = 2**53 + 1  # an int64 beyond a double's exact range: read back exactly by Python
NOTE = "ünïcode → \"quoted\"\nline"


class Server:
    def __init__(self, url: str, token: str | None) -> None:
        self.url, self.token = url, token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@pytest.fixture(scope="module", params=["plain", "sso"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    port = free_port()
    state = tmp_path_factory.mktemp(f"compact-{request.param}") / "state"
    if request.param == "plain":
        settings = Settings.model_validate({"server": {"port": port}})
        with running(settings, state) as up:
            yield Server(up.url, None)
        return
    keycloak: KeycloakServer = request.getfixturevalue("keycloak")
    realm = provision_realm(keycloak, f"compact-{uuid.uuid4().hex[:8]}",
                            f"http://127.0.0.1:{port}", users={"bob": [USER_ROLE]})
    with running(sso_settings(realm, port), state) as up:
        yield Server(up.url, realm.new_token("bob"))


def assert_compact_and_same(body: bytes, message: Message) -> dict[str, Any]:
    """MLflow's compact form (byte for byte) of values that, read into the response message,
    MLflow's pretty serializer gives again: no field, type or int64 rule changed."""
    values: dict[str, Any] = json.loads(body)
    assert body == json.dumps(values, separators=(",", ":")).encode(), body[:300]
    parse_dict(values, message)  # type: ignore[no-untyped-call]  # MLflow is untyped
    assert json.loads(message_to_json(message)) == values
    return values


def test_python_client_and_ui_calls_read_compact_json(server: Server,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if server.token:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", server.token)
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    experiment = client.create_experiment(f"compact-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment, start_time=1_764_000_000_123, run_name="brave-owl")
    client.log_param(run.info.run_id, "note", NOTE)
    client.set_tag(run.info.run_id, "team", "vision")
    client.log_metric(run.info.run_id, "loss", 0.25, timestamp=BIG, step=7)
    model = f"compact-model-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(model, description=NOTE)

    # The Python client parses what the server wrote.
    (found,) = client.search_runs([experiment], "tags.team = 'vision'")
    assert found.data.params == {"note": NOTE}
    assert found.data.metrics == {"loss": 0.25}
    (history,) = client.get_metric_history(run.info.run_id, "loss")
    assert (history.timestamp, history.step) == (BIG, 7)
    assert [m.name for m in client.search_registered_models(f"name = '{model}'")] == [model]

    # The UI's calls, as its fetch() sends them: compact, and the same values as before.
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60.0) as ui:
        answer = ui.post("/ajax-api/2.0/mlflow/runs/search", json={
            "experiment_ids": [experiment], "filter": "", "run_view_type": "ACTIVE_ONLY",
            "max_results": 100, "order_by": ["attributes.start_time DESC"]})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        values = assert_compact_and_same(answer.content, SearchRuns.Response())
        info = values["runs"][0]["info"]
        assert info["start_time"] == 1_764_000_000_123  # int64 as a number, as MLflow writes it
        assert values["runs"][0]["data"]["metrics"][0]["timestamp"] == BIG
        assert "\\u00fc" in answer.text  # escaped as MLflow's serializer always did
        answer = ui.get("/ajax-api/2.0/mlflow/runs/get", params={"run_id": run.info.run_id})
        assert_compact_and_same(answer.content, GetRun.Response())
        # With SSO this one is re-serialized by mlflow-oidc-auth's filter (bob is no admin).
        answer = ui.get("/ajax-api/2.0/mlflow/registered-models/search",
                        params={"filter": f"name = '{model}'", "max_results": "25"})
        assert answer.status_code == 200, answer.text
        values = assert_compact_and_same(answer.content, SearchRegisteredModels.Response())
        assert [m["name"] for m in values["registered_models"]] == [model]
        assert values["registered_models"][0]["description"] == NOTE
