# MLflow's client API is unannotated.
# mypy: disable-error-code="no-untyped-call"
"""`verify`: prove a running platform works end to end, as a user would use it.

One pass, one result per step (ok / failed / skipped, what happened, seconds):

    server health, token, create experiment, log params and metrics, artifact round trip
    (20 MB up and down through MLflow's client, sha256 compared), log model, register model,
    alias and stage, mlflow-user refused an admin-only call, anonymous call refused, clean-up

A step whose prerequisite failed is skipped and says which one. Clean-up always runs and is its
own step: the registered model, the artifacts, the logged model, the run and the experiment are
deleted (MLflow keeps a deleted experiment in its "deleted" lifecycle until `mlflow gc`), and the
temporary Keycloak user is removed whatever happened before.

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
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import secrets
import ssl
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError, StackError
from mlflow_stack.local import process
from mlflow_stack.local.backup import sha256_file
from mlflow_stack.local.state import StateDir
from mlflow_stack.ops.verify_identity import (
    TEMP_PREFIX,
    Identity,
    environment_identity,
    temporary_user,
)

Status = Literal["ok", "failed", "skipped"]

ARTIFACT_BYTES = 20 * 1000 * 1000
API = "/api/2.0/mlflow"
# mlflow-oidc-auth 10.1.3: routers/users.py list_user_details, Depends(check_admin_permission).
ADMIN_ONLY_PATH = f"{API}/users/details"
CURRENT_USER_PATH = f"{API}/users/current"
# A tracking call (not /health, which is open by design).
ANONYMOUS_PATH = f"{API}/experiments/search?max_results=1"
ALIAS = "verify"
STAGE = "Staging"
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

HEALTH = "server health"
TOKEN = "token"
EXPERIMENT = "create experiment"
RUN = "log params and metrics"
ARTIFACT = "artifact round trip"
MODEL = "log model"
REGISTER = "register model"
ALIAS_STAGE = "alias and stage"
ROLE = "mlflow-user refused admin call"
ANONYMOUS = "anonymous call refused"
CLEANUP = "clean-up"
STEPS = (HEALTH, TOKEN, EXPERIMENT, RUN, ARTIFACT, MODEL, REGISTER, ALIAS_STAGE, ROLE,
         ANONYMOUS, CLEANUP)

# MLflow settings a run controls for its duration (restored afterwards).
_MLFLOW_ENV = {
    "MLFLOW_TRACKING_TOKEN": None,  # set per step from the identity
    "MLFLOW_TRACKING_AUTH": None,  # our token, not another provider's
    "MLFLOW_TRACKING_USERNAME": None,
    "MLFLOW_TRACKING_PASSWORD": None,
    "MLFLOW_RUN_ID": None,
    "MLFLOW_EXPERIMENT_ID": None,
    "MLFLOW_EXPERIMENT_NAME": None,
    "MLFLOW_REGISTRY_URI": None,
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Fail a verify in seconds, not after MLflow's default minutes of back-off.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}

MODEL_CODE = '''\
"""A trivial model logged by mlflow-stack verify (models from code: nothing pickled)."""
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return model_input


mlflow.models.set_model(Echo())
'''


@dataclass(frozen=True)
class StepResult:
    step: str
    status: Status
    detail: str
    seconds: float


@dataclass(frozen=True)
class Target:
    """The server to verify and why that one."""

    url: str
    source: str


class StepFailed(Exception):
    """A step's check did not hold (the message is the step's detail)."""


class _Skip(Exception):
    """A step that does not apply (the message says why)."""


# --------------------------------------------------------------------------------------------
# which server


def check_url(url: str) -> str:
    """A server URL given with --url, validated (ConfigError names the option)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--url {url!r} is not an http(s) URL",
                          hint="e.g. --url https://mlflow.example.com")
    if parts.query or parts.fragment:
        raise ConfigError(f"--url {url!r} must not have a query or fragment")
    return url.rstrip("/")


def resolve_target(settings: Settings | None, state: StateDir | None, url: str | None,
                   config_given: bool) -> Target:
    """Which server to verify.

    --url wins (and excludes a config). Otherwise the local server running for the state
    directory; failing that, the config's public URL (a deployed platform). Without a config
    and without a running local server there is nothing to verify: ConfigError.
    """
    if url is not None:
        if config_given:
            raise ConfigError("pass either --config/-c or --url, not both",
                              hint="-c verifies the platform of a config (its local server if "
                                   "one runs, else its public URL); --url any server")
        return Target(check_url(url), "--url")
    if state is not None:
        record = process.find_running(state).record
        if record is not None:
            return Target(record.url.rstrip("/"), f"local server of {state.root}")
    if not config_given or settings is None:
        where = state.root if state is not None else "the state directory"
        raise ConfigError(
            f"nothing to verify: no local server is running for {where}, and neither "
            "--config/-c nor --url was given",
            hint="start one with `mlflow-stack up`, or pass --url URL of a deployed platform "
                 "or -c CONFIG (its public URL is used when no local server runs)")
    return Target(settings.public_url.rstrip("/"), "public URL of the config")


# --------------------------------------------------------------------------------------------
# MLflow's process-wide settings, scoped to one run


@contextlib.contextmanager
def _mlflow_scope(url: str) -> Iterator[Callable[[str | None], None]]:
    """Point MLflow at url for the duration; yields a setter for the bearer token."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    keys = [*_MLFLOW_ENV, "MLFLOW_TRACKING_URI"]
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_uri = tracking_utils._tracking_uri
    mlflow_logger = logging.getLogger("mlflow")
    saved_level = mlflow_logger.level

    def set_token(token: str | None) -> None:
        if token:
            os.environ["MLFLOW_TRACKING_TOKEN"] = token
        else:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)

    try:
        for key, value in _MLFLOW_ENV.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(url)
        mlflow_logger.setLevel(logging.ERROR)  # "waiting for model version ..." and the like
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield set_token
    finally:
        with contextlib.suppress(Exception):
            while mlflow.active_run() is not None:
                mlflow.end_run()
        mlflow.set_tracking_uri(saved_uri)  # type: ignore[arg-type]  # None is accepted
        mlflow_logger.setLevel(saved_level)
        for key, old in saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# --------------------------------------------------------------------------------------------
# helpers


def _describe(exc: BaseException) -> str:
    """One line for a result: what went wrong, never a token."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, StackError):
        text = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    elif isinstance(exc, MlflowException):
        text = exc.message
        status = re.search(r"too many (\d{3}) error responses", text)
        if status:  # MLflow's retries ran out: the host and pool details add nothing
            called = re.search(r"API request to (\S+) failed", text)
            path = f" to {urlsplit(called.group(1)).path}" if called else ""
            text = f"HTTP {status.group(1)} from the server{path} (its log says why)"
    elif isinstance(exc, StepFailed | _Skip):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    """Say which part of a step failed."""
    try:
        yield
    except Exception as exc:
        raise StepFailed(f"{name}: {_describe(exc)}") from exc


def _random_file(path: Path, size: int) -> str:
    """Write size random bytes; return their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _mb(size: int) -> str:
    return f"{size / 1e6:g} MB"


def _verify_option() -> ssl.SSLContext | str:
    """TLS trust for our own HTTP calls: MLflow's server-cert variable, else the system store."""
    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return cert if cert else ssl.create_default_context()


def _is_not_found(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class _Verification:
    url: str
    settings: Settings | None
    env: Mapping[str, str]
    artifact_bytes: int
    on_step: Callable[[StepResult], None] | None
    http: httpx.Client
    work: Path
    results: list[StepResult] = field(default_factory=list)
    identity: Identity | None = None
    auth_on: bool | None = None  # None: unknown yet
    auth_off_reason: str = ""
    set_token: Callable[[str | None], None] = lambda _token: None
    name: str = field(default_factory=lambda: f"{TEMP_PREFIX}{secrets.token_hex(4)}")
    experiment_id: str | None = None
    run_id: str | None = None
    run_artifact_uri: str | None = None
    model_uri: str | None = None
    model_id: str | None = None
    version: str | None = None
    registered: bool = False
    artifact_attempted: bool = False

    # -- step bookkeeping ------------------------------------------------------------------------

    def status(self, step: str) -> Status | None:
        for r in self.results:
            if r.step == step:
                return r.status
        return None

    def record(self, step: str, status: Status, detail: str, seconds: float) -> None:
        result = StepResult(step, status, detail, round(seconds, 2))
        self.results.append(result)
        if self.on_step is not None:
            self.on_step(result)

    def step(self, name: str, body: Callable[[], str], needs: tuple[str, ...] = ()) -> None:
        for need in needs:
            if self.status(need) != "ok":
                how = "failed" if self.status(need) == "failed" else "was skipped"
                self.record(name, "skipped", f"needs '{need}', which {how}", 0.0)
                return
        start = time.monotonic()
        try:
            self.refresh_token()
            detail = body()
        except _Skip as exc:
            self.record(name, "skipped", str(exc), time.monotonic() - start)
        except Exception as exc:
            self.record(name, "failed", _describe(exc), time.monotonic() - start)
        else:
            self.record(name, "ok", detail, time.monotonic() - start)

    def refresh_token(self) -> None:
        """The identity's current token for MLflow (a manager renews it near expiry)."""
        self.set_token(self.identity.token() if self.identity is not None else None)

    def headers(self) -> dict[str, str]:
        return ({"Authorization": f"Bearer {self.identity.token()}"}
                if self.identity is not None else {})

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    # -- steps -----------------------------------------------------------------------------------

    def health(self) -> str:
        try:
            response = self.http.get(f"{self.url}/health")
        except httpx.HTTPError as exc:
            raise StepFailed(f"{self.url} does not answer: {exc}") from None
        if response.status_code != 200:
            raise StepFailed(f"{self.url}/health answered HTTP {response.status_code}")
        return f"{self.url}/health answered 200"

    def anonymous_status(self) -> int:
        return self.http.get(f"{self.url}{ANONYMOUS_PATH}").status_code

    def token(self) -> str:
        s = self.settings
        if s is not None and s.auth.provider == "none":
            self.auth_on = False
            self.auth_off_reason = "auth.provider is none (no SSO)"
            raise _Skip(self.auth_off_reason)
        if s is not None and s.secrets.effective_keycloak_admin_password is not None:
            self.identity = temporary_user(s)
        else:
            self.identity = environment_identity(self.env)
        if self.identity is None:
            code = self.anonymous_status()
            if code == 200:
                self.auth_on = False
                self.auth_off_reason = ("no credentials given and the server answers tracking "
                                        "calls without a token (no SSO)")
                raise _Skip(self.auth_off_reason)
            hint = ("set KEYCLOAK_ADMIN_PASSWORD (or ADMIN_PASSWORD) to verify as a temporary "
                    "mlflow-user" if s is not None else "")
            raise StepFailed(
                f"the server requires a token (anonymous call: HTTP {code}) and no credentials "
                "were found: run `mlflow-stack login`, set MLFLOW_KEYCLOAK_TOKEN_URL with "
                "MLFLOW_AUTH_USERNAME/MLFLOW_AUTH_PASSWORD, or MLFLOW_TRACKING_TOKEN"
                + (f"; or {hint}" if hint else ""))
        self.auth_on = True
        from mlflow_stack.client.oidc import unverified_claims

        token = self.identity.token()
        who = unverified_claims(token).get("preferred_username")
        return f"{self.identity.description}" + (f", signed in as {who}" if who and
                                                  who not in self.identity.description else "")

    def experiment(self) -> str:
        client = self.client()
        self.experiment_id = client.create_experiment(self.name, tags={"mlflow-stack": "verify"})
        got = client.get_experiment_by_name(self.name)
        if got is None or got.experiment_id != self.experiment_id:
            raise StepFailed(f"experiment {self.name} was created but cannot be read back")
        return f"experiment {self.name} (id {self.experiment_id})"

    def params_and_metrics(self) -> str:
        from mlflow.entities import Metric, Param

        client = self.client()
        run = client.create_run(self.experiment_id, run_name="verify")
        self.run_id, self.run_artifact_uri = run.info.run_id, run.info.artifact_uri
        now = int(time.time() * 1000)
        params = {"learning_rate": "0.01", "layers": "3"}
        metrics = [Metric("accuracy", v, now + i, i) for i, v in enumerate((0.5, 0.75, 0.95))]
        client.log_batch(self.run_id, metrics=metrics,
                         params=[Param(k, v) for k, v in params.items()])
        data = client.get_run(self.run_id).data
        history = [m.value for m in client.get_metric_history(self.run_id, "accuracy")]
        if data.params != params:
            raise StepFailed(f"params read back as {data.params}, logged {params}")
        if sorted(history) != [0.5, 0.75, 0.95] or data.metrics.get("accuracy") != 0.95:
            raise StepFailed(f"metric history read back as {history}")
        client.set_terminated(self.run_id)
        return f"run {self.run_id}: {len(params)} params, 3 metric steps read back"

    def artifact(self) -> str:
        self.artifact_attempted = True
        client = self.client()
        upload = self.work / "up" / "verify-blob.bin"
        upload.parent.mkdir()
        want = _random_file(upload, self.artifact_bytes)
        start = time.monotonic()
        with _phase("upload"):
            client.log_artifact(self.run_id, str(upload), artifact_path="verify")
        up = time.monotonic() - start
        listed = {f.path: f.file_size for f in client.list_artifacts(self.run_id, "verify")}
        if listed.get("verify/verify-blob.bin") != self.artifact_bytes:
            raise StepFailed(f"after upload the server lists {listed or 'nothing'}")
        down_dir = self.work / "down"
        down_dir.mkdir()
        start = time.monotonic()
        with _phase("download"):
            local = Path(client.download_artifacts(self.run_id, "verify/verify-blob.bin",
                                                   str(down_dir)))
        down = time.monotonic() - start
        got = sha256_file(local)
        if got != want or local.stat().st_size != self.artifact_bytes:
            raise StepFailed(f"downloaded {local.stat().st_size} bytes with sha256 {got[:12]}…,"
                             f" uploaded {self.artifact_bytes} with {want[:12]}…")
        return (f"{_mb(self.artifact_bytes)} up {up:.1f}s, down {down:.1f}s, "
                f"sha256 {want[:12]}… matches ({self.run_artifact_uri})")

    def model(self) -> str:
        import mlflow

        code = self.work / "verify_model.py"
        code.write_text(textwrap.dedent(MODEL_CODE))
        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(code),
                pip_requirements=[f"mlflow=={mlflow.__version__}"])
        self.model_uri, self.model_id = info.model_uri, info.model_id
        files = {f.path for f in self.client().list_logged_model_artifacts(self.model_id)}
        if "MLmodel" not in files:
            raise StepFailed(f"logged model {self.model_id} has no MLmodel file ({files})")
        return f"{self.model_uri} ({len(files)} files)"

    def register(self) -> str:
        client = self.client()
        client.create_registered_model(self.name, description="mlflow-stack verify")
        self.registered = True
        mv = client.create_model_version(self.name, source=self.model_uri, run_id=self.run_id,
                                         model_id=self.model_id, await_creation_for=60)
        self.version = str(mv.version)
        if mv.status != "READY":
            raise StepFailed(f"version {mv.version} of {self.name} is {mv.status}, not READY")
        return f"registered model {self.name} version {self.version}"

    def alias_and_stage(self) -> str:
        client = self.client()
        client.set_registered_model_alias(self.name, ALIAS, self.version)
        by_alias = client.get_model_version_by_alias(self.name, ALIAS)
        if str(by_alias.version) != self.version:
            raise StepFailed(f"alias {ALIAS} points at version {by_alias.version}, "
                             f"set to {self.version}")
        with warnings.catch_warnings():  # stages are deprecated, still served
            warnings.simplefilter("ignore", FutureWarning)
            client.transition_model_version_stage(self.name, self.version, STAGE)
        stage = client.get_model_version(self.name, self.version).current_stage
        if stage != STAGE:
            raise StepFailed(f"version {self.version} is in stage {stage}, not {STAGE}")
        return f"alias @{ALIAS} -> version {self.version}, stage {STAGE}"

    def role_refused(self) -> str:
        if not self.auth_on:
            raise _Skip(self.auth_off_reason or "no token")
        assert self.identity is not None
        if not self.identity.temporary:
            current = self.http.get(f"{self.url}{CURRENT_USER_PATH}", headers=self.headers())
            if current.status_code != 200:
                raise _Skip(f"cannot tell whether {self.identity.description} is an admin "
                            f"(GET {CURRENT_USER_PATH}: HTTP {current.status_code})")
            if current.json().get("is_admin"):
                raise _Skip(f"{self.identity.description} is an MLflow admin; this check needs "
                            "a non-admin identity (-c CONFIG with the Keycloak admin password "
                            "verifies as a temporary mlflow-user)")
        response = self.http.get(f"{self.url}{ADMIN_ONLY_PATH}", headers=self.headers())
        if response.status_code != 403:
            raise StepFailed(f"GET {ADMIN_ONLY_PATH} (admins only) answered HTTP "
                             f"{response.status_code} to a non-admin, expected 403")
        return f"GET {ADMIN_ONLY_PATH} (admins only) answered 403"

    def anonymous(self) -> str:
        if not self.auth_on:
            raise _Skip(self.auth_off_reason or "no token")
        code = self.anonymous_status()
        if code != 401:
            raise StepFailed(f"GET {ANONYMOUS_PATH} without a token answered HTTP {code}, "
                             "expected 401")
        return f"GET {ANONYMOUS_PATH} without a token answered 401"

    # -- clean-up --------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove what the run created; always runs, and always removes the temporary user.

        Failed when the experiment, run, logged or registered model or the temporary user
        cannot be deleted. Artifacts are deleted too (MLflow itself keeps them until
        `mlflow gc`); artifacts the server cannot delete are named in the detail as left
        behind, without failing the step.
        """
        start = time.monotonic()
        done: list[str] = []
        problems: list[str] = []
        left: list[str] = []
        try:
            with contextlib.suppress(Exception):
                self.refresh_token()
            self._cleanup_mlflow(done, problems, left)
        finally:
            if self.identity is not None and self.identity.remove is not None:
                try:
                    done.append(self.identity.remove())
                except Exception as exc:
                    problems.append(f"temporary user not removed: {_describe(exc)}")
            parts = problems + ([f"left behind: {', '.join(left)}"] if left else []) + done
            self.record(CLEANUP, "failed" if problems else "ok",
                        "; ".join(parts) or "nothing to remove", time.monotonic() - start)

    def _cleanup_mlflow(self, done: list[str], problems: list[str], left: list[str]) -> None:
        if self.experiment_id is None and not self.registered:
            return
        client = self.client()

        def attempt(what: str, action: Callable[[], object]) -> bool:
            """One deletion; a thing that is already gone counts as deleted."""
            try:
                action()
            except Exception as exc:
                if _is_not_found(exc):
                    return True
                problems.append(f"{what}: {_describe(exc)}")
                return False
            return True

        def delete_artifacts(uri: str) -> bool:
            from mlflow.store.artifact.artifact_repository_registry import (
                get_artifact_repository,
            )

            try:
                get_artifact_repository(uri).delete_artifacts()
            except Exception as exc:
                if not _is_not_found(exc):
                    left.append(f"artifacts at {uri} (delete refused: {_describe(exc)})")
                    return False
            return True

        name = self.name
        if self.registered and attempt(
                f"delete registered model {name}", lambda: client.delete_registered_model(name)
        ) and attempt(f"registered model {name}",
                      lambda: _expect_gone(lambda: client.get_registered_model(name))):
            done.append(f"registered model {name} deleted")
        models: list[Any] = []
        experiment_id = self.experiment_id
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
        run_id, run_uri = self.run_id, self.run_artifact_uri
        if run_id is not None and run_uri is not None:
            if self.artifact_attempted and delete_artifacts(run_uri):
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


def _expect_gone(read: Callable[[], object]) -> None:
    try:
        read()
    except Exception as exc:
        if _is_not_found(exc):
            return
        raise
    raise StepFailed("still there after delete")


def run(url: str, settings: Settings | None = None, *,
        on_step: Callable[[StepResult], None] | None = None,
        artifact_bytes: int = ARTIFACT_BYTES,
        env: Mapping[str, str] | None = None) -> list[StepResult]:
    """Verify the server at url; one StepResult per step of STEPS, in order.

    settings: the platform's config (auth mode, Keycloak admin access for a temporary user);
    None for a bare URL. env: where the user's own credentials are looked up (default: the
    process environment). on_step is called with each result as soon as it is known.
    """
    if artifact_bytes <= 0:
        raise ConfigError("the artifact size must be positive")
    url = check_url(url)
    with (tempfile.TemporaryDirectory(prefix="mlflow-verify-") as work,
          httpx.Client(timeout=HTTP_TIMEOUT, verify=_verify_option(),
                       follow_redirects=False) as http):
        v = _Verification(url, settings, os.environ if env is None else env, artifact_bytes,
                          on_step, http, Path(work))
        with _mlflow_scope(url) as set_token:
            v.set_token = set_token
            try:
                v.step(HEALTH, v.health)
                v.step(TOKEN, v.token, needs=(HEALTH,))
                if v.auth_on is False and v.status(TOKEN) == "skipped":
                    after_token: tuple[str, ...] = (HEALTH,)
                else:
                    after_token = (HEALTH, TOKEN)
                v.step(EXPERIMENT, v.experiment, needs=after_token)
                v.step(RUN, v.params_and_metrics, needs=(EXPERIMENT,))
                v.step(ARTIFACT, v.artifact, needs=(RUN,))
                v.step(MODEL, v.model, needs=(RUN,))
                v.step(REGISTER, v.register, needs=(MODEL,))
                v.step(ALIAS_STAGE, v.alias_and_stage, needs=(REGISTER,))
                v.step(ROLE, v.role_refused, needs=after_token)
                v.step(ANONYMOUS, v.anonymous, needs=after_token)
            finally:
                v.cleanup()
    return v.results


def failed(results: list[StepResult]) -> list[StepResult]:
    return [r for r in results if r.status == "failed"]
