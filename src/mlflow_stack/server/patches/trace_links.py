"""Linking traces to a run needs READ on the traces too, as in MLflow's own auth.

``POST /api/2.0/mlflow/traces/link-to-run`` writes an association between the run and each
trace named. mlflow-oidc-auth 10.1.3 checks only UPDATE on the run, so a user could attach any
trace, even one hidden from them, to a run of their own. MLflow's basic-auth
(``validate_can_link_traces_to_run``) also requires READ on every trace's experiment and refuses
unknown trace ids; here the same is added to mlflow-oidc-auth's check. The trace ids are
collected the way its batch-read check collects them (query string, body, both spellings).
Applied after the app is built: the validator map exists by then.
"""

from __future__ import annotations

from typing import Any

from mlflow_stack.server.guards import Shape, UpstreamChanged, wrapping

_TRACE = "mlflow_oidc_auth.validators.trace"
LINK_CHECK = Shape(_TRACE, "validate_can_update_trace_from_run_id", ("username",))
TRACE_IDS = Shape(_TRACE, "_all_trace_ids_from_batch", ())
READ_ALL = Shape(_TRACE, "_require_read_on_all", ("username", "experiment_ids"))
EXPERIMENT_OF = Shape(_TRACE, "_experiment_for_trace", ("trace_id",))
VALIDATORS = Shape("mlflow_oidc_auth.hooks.before_request", "BEFORE_REQUEST_VALIDATORS")
UPSTREAM = (LINK_CHECK, TRACE_IDS, READ_ALL, EXPERIMENT_OF, VALIDATORS)


def apply(app: Any) -> None:
    original = LINK_CHECK.require()
    trace_ids, read_all, experiment_of = (s.require() for s in (TRACE_IDS, READ_ALL,
                                                                 EXPERIMENT_OF))
    validators: dict[tuple[str, str], Any] = VALIDATORS.require()

    @wrapping(original)
    def link_check(username: str) -> bool:
        if not original(username):
            return False
        ids = trace_ids()
        try:
            experiments = {str(experiment_of(trace_id)) for trace_id in ids}
        except Exception:  # an unknown trace (or a store error): refused, as MLflow's own auth
            return False
        return bool(read_all(username, sorted(experiments)))

    bound = [key for key, check in validators.items() if check is original]
    if not bound:
        raise UpstreamChanged(f"{LINK_CHECK.module}.{LINK_CHECK.path} guards no route: revisit "
                              f"{__name__} for this version")
    for key in bound:
        validators[key] = link_check
