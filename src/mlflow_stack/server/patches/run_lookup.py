"""A run's experiment is looked up once (speed; no check changes).

Run-level permission checks first ask MLflow's DB which experiment a run belongs to, on every
request. A run never changes experiment, so the answer is kept (bounded) while workspaces are
off (with them on, that lookup is also a workspace check and stays per request). Applied after
the app is built: its import pulls in the validators whose references are replaced.
"""

from __future__ import annotations

import sys
from typing import Any

from mlflow_stack.server.caches import ExpiringCache
from mlflow_stack.server.guards import Shape, wrapping

LOOKUP = Shape("mlflow_oidc_auth.utils.data_fetching", "get_run_experiment_id",
               ("tracking_store", "run_id"))
UPSTREAM = (LOOKUP,)


def apply(app: Any) -> None:
    original = LOOKUP.require()
    from mlflow_oidc_auth.config import config

    if config.MLFLOW_ENABLE_WORKSPACES:
        return  # the lookup is scoped to the request's workspace: keep it per request
    known: ExpiringCache[str, str] = ExpiringCache()

    @wrapping(original)
    def cached(tracking_store: Any, run_id: str) -> str:
        hit = known.get(run_id)
        if hit is not None:
            return hit
        experiment_id: str = original(tracking_store, run_id)
        known.put(run_id, experiment_id, 24 * 3600.0)  # immutable; the bound is for memory
        return experiment_id

    # The validators import the function by name: replace every such reference.
    for name, module in list(sys.modules.items()):
        if name.startswith("mlflow_oidc_auth") and \
                getattr(module, "get_run_experiment_id", None) is original:
            vars(module)["get_run_experiment_id"] = cached
