"""`verify`: prove a running platform works end to end, as a user would use it.

One pass, one result per step (ok / failed / skipped, what happened, seconds):

    server health, token, create experiment, log params and metrics, artifact round trip
    (20 MB up and down through MLflow's client, sha256 compared), log model, register model,
    alias and stage, register and load a prompt, log a trace (over OTLP) and read it back,
    mlflow-user refused an admin-only call, anonymous call refused, clean-up

A step whose prerequisite failed is skipped and says which one. Clean-up always runs and is its
own step: the registered model, the prompt, the trace, the artifacts, the logged model, the run
and the experiment are deleted (MLflow keeps a deleted experiment in its "deleted" lifecycle
until `mlflow gc`), and the temporary Keycloak user is removed whatever happened before.

Who verifies (SSO on):
- With a config and the Keycloak admin password: a temporary realm user `mlflow-verify-<hex>`
  holding only `auth.user_role`, signed in with the password grant on the platform's own
  confidential client — so the role check runs as a real non-admin user.
- Otherwise (or with a URL): the credentials the `keycloak` MLflow auth plugin would use (stored
  `mlflow-stack login`, MLFLOW_KEYCLOAK_* variables) or MLFLOW_TRACKING_TOKEN. The role check is
  skipped when that identity is an MLflow admin.

The admin-only call is mlflow-oidc-auth 10.1.3's `GET /api/2.0/mlflow/users/details` (guarded by
its `check_admin_permission`: 403 for everyone but admins, 200 for an admin). It is read-only, so
the check changes nothing even on a platform that wrongly allows it.

MLflow's client reads its settings from process-wide state (tracking URI, environment); a run
sets them for its own duration and puts the previous values back. Nothing is printed; secrets
(tokens, passwords, client secrets) never appear in a result.

Modules: runner (the steps in order), target (which server), steps (the step names and
results), context (one run's state and step bookkeeping), mlflow_scope (MLflow's process-wide
settings for the run), credentials (who verifies) and sign_in (the token step), access (health, the
role and anonymous checks), tracking (experiment, params and metrics), artifact_round_trip,
model_registry (log, register, alias and stage), genai (prompt, trace), cleanup.
"""
