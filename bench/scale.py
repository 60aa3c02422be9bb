"""A year of a team's data: what users wait for on a realistic store, plain MLflow vs the platform.

Starts a real PostgreSQL (the test harness), lets MLflow create its schema (``mlflow db
upgrade``), then bulk-loads a year of one team's tracking data with COPY (no REST calls). The
default shape:

- 4 experiments: ``Default`` (empty) and 3 team experiments holding 50 % / 30 % / 20 % of the runs;
- 10,000 runs over the last 365 days (``--runs``), status FINISHED (3 % FAILED, 1 % KILLED),
  lifecycle ``active``, ``artifact_uri`` ``mlflow-artifacts:/<experiment>/<run>/artifacts``
  (what a proxied-artifacts server writes), a user, a source, a git commit;
- 20 params and 10 tags per run (``mlflow.runName``, ``mlflow.user``, ... and team tags), values
  drawn from small realistic sets so that filters select a fraction of the runs;
- 10 metrics x 100 steps per run (``--metrics``, ``--steps``): 10 M metric points by default,
  and ``latest_metrics`` holding exactly each (run, key)'s last step, as MLflow keeps it;
- 30 registered models x 10 versions (``--models``, ``--versions``), each version from a run,
  an alias ``champion`` per model, a few in stage Production / Staging.

The metrics table is loaded with its indexes dropped and re-created afterwards (same DDL as
MLflow's), foreign-key triggers off for the load (``session_replication_role = replica``), then
``VACUUM ANALYZE`` — the state of a store that autovacuum has seen.

Then it serves the same database with (a) plain ``mlflow server`` (its defaults: 4 uvicorn
workers, artifacts proxied to ``./mlartifacts``; only the job runner and telemetry are turned
off, as on the platform) and (b) the platform (``platform.up`` with ``auth.provider: none``;
``--keycloak`` adds ``auth.provider: keycloak`` with a bearer token, as bench/sso_tax.py does),
and times what users do, alternating the sides call by call (keep-alive httpx clients):
the experiment page (``runs/search`` as the UI sends it: 100 runs, ``attributes.start_time
DESC``, page 1 and page 20 by following ``page_token``), ``runs/search`` with a metric, a param
and a tag filter and ordered by a metric, ``metrics/get-history`` of one run, the UI's charts
call ``metrics/get-history-bulk-interval`` (10 runs, ``max_results`` 320), registered-model and
model-version searches, and a run's artifact listing. The floor is MLflow's own SQL for each call
(captured from MLflow's SqlAlchemyStore in this process) replayed with psycopg. It also times a
small call on a kept-alive connection against a fresh connection per call (delayed ACK).

``--tuning`` then applies candidate PostgreSQL settings and indexes (``CANDIDATES``: those
that helped are in ``mlflow_stack.components.postgres_tuning``), shows what each buys on the
SQL floor as an interleaved A/B (the candidate undone inside a rolled-back transaction), and
measures every side again on the tuned database. ``--explain`` prints EXPLAIN ANALYZE of each
call's slowest statement (before and after tuning), ``--profile`` a cProfile of the experiment
page in this process. The platform's workers run with the garbage collector as
server/gunicorn_conf.py sets it (imports frozen in the master before the fork, thresholds
50000,20,100), compact JSON built in one walk (server/patches/compact_json.py) and
``runs/search`` answered from rows (server/patches/fast_runs_search.py).
``--gc-threshold a,b,c`` adds a side ``platform+gc`` with other thresholds (bench/gc_site;
the master's freeze is the platform's own).
Timings on a shared 2-core machine are noisy: read ratios and percentiles within one run.

    .venv/bin/python bench/scale.py --tuning --explain --profile    # the full run, ~20 min
    .venv/bin/python bench/scale.py --runs 2000 --reps 5           # a quick run, ~5 min

``--keycloak`` (a fourth side with auth.provider keycloak) is wired but has not been run yet:
the loaded experiments carry no mlflow-oidc-auth permissions for the bench user.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pydantic import SecretStr

# This checkout's harness and library first (the shared venv's editable install may point at
# another checkout).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness.ports import free_port
from harness.postgres import PostgresServer, start_postgres
from harness.procs import spawn, stop_group
from mlflow_stack.components import postgres_tuning
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress
from mlflow_stack.server.patches import fast_runs_search

DB = "mlflow_bench"
VENV_BIN = Path(sys.executable).parent
DAY_MS = 86_400_000
NOW_MS = int(time.time() * 1000)

METRIC_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy", "precision", "recall", "f1",
               "auc", "learning_rate", "grad_norm")
PARAM_CHOICES: dict[str, tuple[str, ...]] = {
    "learning_rate": ("0.1", "0.03", "0.01", "0.003", "0.001", "0.0003", "0.0001"),
    "batch_size": ("16", "32", "64", "128", "256"),
    "epochs": ("10", "20", "50", "100"),
    "optimizer": ("adam", "adamw", "sgd", "rmsprop"),
    "model_type": ("resnet18", "resnet50", "vit-b16", "efficientnet-b0", "convnext-t", "mlp"),
    "dropout": ("0.0", "0.1", "0.2", "0.3", "0.5"),
    "weight_decay": ("0.0", "1e-5", "1e-4", "1e-3", "0.01"),
    "hidden_size": ("128", "256", "512", "1024"),
    "num_layers": ("2", "4", "6", "8", "12"),
    "seed": (),  # a random integer
    "dataset_version": tuple(f"v{i}" for i in range(1, 13)),
    "warmup_steps": ("0", "100", "500", "1000"),
    "scheduler": ("cosine", "linear", "step", "none"),
    "loss_fn": ("cross_entropy", "focal", "label_smoothing_ce"),
    "augmentation": ("none", "light", "heavy", "randaugment"),
    "precision": ("fp32", "fp16", "bf16"),
    "grad_clip": ("0.5", "1.0", "5.0", "none"),
    "label_smoothing": ("0.0", "0.05", "0.1"),
    "grad_accum": ("1", "2", "4", "8"),
    "data_fraction": ("0.1", "0.25", "0.5", "1.0"),
}
USERS = tuple(f"{n}@example.com" for n in ("ana", "ben", "chen", "dara", "eli", "fay", "gus",
                                            "hana"))
TEAM_TAGS: dict[str, tuple[str, ...]] = {
    "team": ("vision", "nlp", "recsys", "forecasting"),
    "stage": ("exploration", "tuning", "candidate"),
    "dataset": ("imagenet-1k", "coco", "internal-2026q1", "internal-2026q3"),
    "gpu": ("a100", "h100", "l4", "cpu"),
}
EXPERIMENT_SHARES = (0.5, 0.3, 0.2)
MAX_POINTS = 320  # what the UI's charts ask get-history-bulk-interval for


@dataclass(frozen=True)
class Shape:
    runs: int
    metrics: int
    steps: int
    models: int
    versions: int

    def describe(self) -> str:
        points = self.runs * self.metrics * self.steps
        return (f"{len(EXPERIMENT_SHARES)} experiments, {self.runs:,} runs, "
                f"{len(PARAM_CHOICES)} params + {4 + len(TEAM_TAGS) + 2} tags per run, "
                f"{self.metrics} metrics x {self.steps} steps ({points:,} points), "
                f"{self.models} models x {self.versions} versions")


@dataclass(frozen=True)
class Dataset:
    """What the calls need to know about the loaded data."""

    experiment_id: str  # the biggest experiment: the one the experiment page shows
    run_id: str  # a run of it, for metric history and artifacts
    artifact_path: str  # mlflow-artifacts path of that run's artifacts, relative
    bulk_run_ids: list[str]  # 10 runs for the charts call
    model_name: str


# --------------------------------------------------------------------------------------------
# Bulk load


def create_schema(pg: PostgresServer) -> float:
    """An empty database with MLflow's schema, made by MLflow itself. Seconds taken."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DB}")
    started = time.perf_counter()
    result = subprocess.run(
        [str(VENV_BIN / "mlflow"), "db", "upgrade", backend_uri(pg)],
        env={**os.environ, "PGPASSWORD": pg.password}, capture_output=True, text=True,
        check=False)
    if result.returncode != 0:
        raise RuntimeError(f"mlflow db upgrade failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def backend_uri(pg: PostgresServer, db: str = DB) -> str:
    """No password in it: PGPASSWORD carries it."""
    return f"postgresql://{pg.superuser}@{pg.host}:{pg.port}/{db}"


def _copy_rows(conn: psycopg.Connection[Any], table: str, columns: str,
               rows: list[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _run_name(rng: random.Random, i: int) -> str:
    adjectives = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "kind", "lucky",
                  "mighty", "nimble", "proud", "quiet", "rare", "silent", "tidy", "vast", "wise")
    animals = ("ant", "bat", "cod", "doe", "eel", "fox", "gnu", "hen", "ibis", "jay", "koi",
               "lark", "mole", "newt", "owl", "pug", "ram", "seal", "toad", "yak")
    return f"{rng.choice(adjectives)}-{rng.choice(animals)}-{i}"


def _metric_curve(key: str, step: int, steps: int, quality: float, noise: float) -> float:
    t = step / max(steps - 1, 1)
    if key in ("loss", "val_loss"):
        return 2.3 * math.exp(-4 * quality * t) + 0.05 + (0.04 if key == "val_loss" else 0) \
            + noise * 0.02
    if key == "learning_rate":
        return 0.001 * 0.5 * (1 + math.cos(math.pi * t))
    if key == "grad_norm":
        return 5.0 * math.exp(-2 * t) + 0.3 + noise * 0.1
    top = 0.55 + 0.43 * quality
    value = top * (1 - math.exp(-5 * t)) + noise * 0.01
    return min(value - (0.02 if key.startswith("val_") else 0), 0.999)


def load(pg: PostgresServer, shape: Shape, seed: int) -> tuple[Dataset, dict[str, float]]:
    """COPY a year of data into the MLflow schema. Returns the dataset and seconds per stage."""
    rng = random.Random(seed)
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[stage] = now - mark
        mark = now

    with psycopg.connect(pg.dsn(DB)) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK triggers while loading
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("DELETE FROM experiments")  # a Default experiment, if anything made one
        year_ago = NOW_MS - 365 * DAY_MS
        experiments: list[tuple[Any, ...]] = [
            (0, "Default", "mlflow-artifacts:/0", "active", year_ago, year_ago, "default")]
        names = ("image-classifier", "text-ranker", "demand-forecast")
        for i, name in enumerate(names, start=1):
            experiments.append((i, f"team/{name}", f"mlflow-artifacts:/{i}", "active",
                                year_ago, NOW_MS, "default"))
        _copy_rows(conn, "experiments", "experiment_id, name, artifact_location, lifecycle_stage,"
                   " creation_time, last_update_time, workspace", experiments)
        conn.execute("SELECT setval('experiments_experiment_id_seq', %s)", (len(names),))

        # Runs: start times spread over the year, assigned to experiments by share.
        starts = sorted(rng.randint(year_ago, NOW_MS - DAY_MS) for _ in range(shape.runs))
        exp_ids = rng.choices([1, 2, 3], weights=EXPERIMENT_SHARES, k=shape.runs)
        runs: list[tuple[Any, ...]] = []
        params: list[tuple[Any, ...]] = []
        tags: list[tuple[Any, ...]] = []
        latest: list[tuple[Any, ...]] = []
        run_meta: list[tuple[str, int, int, float]] = []  # run, experiment, start, quality
        for i, (start, exp) in enumerate(zip(starts, exp_ids, strict=True)):
            run = uuid.UUID(int=rng.getrandbits(128)).hex
            duration = rng.randint(10, 600) * 1000 * shape.steps // 10
            status = rng.choices(("FINISHED", "FAILED", "KILLED"), (96, 3, 1))[0]
            name = _run_name(rng, i)
            user = rng.choice(USERS)
            commit = f"{rng.getrandbits(160):040x}"
            runs.append((run, name, "LOCAL", "train.py", "", user, status, start,
                         start + duration, commit, "active",
                         f"mlflow-artifacts:/{exp}/{run}/artifacts", exp))
            for key, choices in PARAM_CHOICES.items():
                value = rng.choice(choices) if choices else str(rng.randint(0, 2**31))
                params.append((key, value, run))
            run_tags = {"mlflow.runName": name, "mlflow.user": user,
                        "mlflow.source.name": "train.py", "mlflow.source.type": "LOCAL",
                        "mlflow.source.git.commit": commit,
                        **{k: rng.choice(v) for k, v in TEAM_TAGS.items()},
                        "ticket": f"ML-{rng.randint(100, 9999)}"}
            tags += [(k, v, run) for k, v in run_tags.items()]
            run_meta.append((run, exp, start, rng.random()))
        _copy_rows(conn, "runs", "run_uuid, name, source_type, source_name, entry_point_name,"
                   " user_id, status, start_time, end_time, source_version, lifecycle_stage,"
                   " artifact_uri, experiment_id", runs)
        _copy_rows(conn, "params", "key, value, run_uuid", params)
        _copy_rows(conn, "tags", "key, value, run_uuid", tags)
        lap("runs, params, tags")

        # Metrics: the big one. Its indexes go first and come back after (same DDL).
        index_rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'metrics' AND "
            "indexname NOT IN (SELECT conname FROM pg_constraint "
            "WHERE conrelid = 'metrics'::regclass)").fetchall()
        pk_rows = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'metrics'::regclass AND contype = 'p'").fetchall()
        for (index, _) in index_rows:
            conn.execute(f"DROP INDEX {index}")
        for (constraint, _) in pk_rows:
            conn.execute(f"ALTER TABLE metrics DROP CONSTRAINT {constraint}")
        keys = METRIC_KEYS[:shape.metrics]
        with conn.cursor() as cur, cur.copy(
                "COPY metrics (key, value, timestamp, run_uuid, step, is_nan) FROM STDIN") as copy:
            for run, _, start, quality in run_meta:
                lines = []
                step_ms = rng.randint(500, 5000)
                for key in keys:
                    last: tuple[float, int, int] = (0.0, 0, 0)
                    for step in range(shape.steps):
                        point = _metric_curve(key, step, shape.steps, quality, rng.gauss())
                        ts = start + step * step_ms
                        lines.append(f"{key}\t{point:.6g}\t{ts}\t{run}\t{step}\tf\n")
                        last = (float(f"{point:.6g}"), ts, step)
                    latest.append((key, last[0], last[1], last[2], False, run))
                copy.write("".join(lines))
        lap("metrics COPY")
        for (constraint, definition) in pk_rows:
            conn.execute(f"ALTER TABLE metrics ADD CONSTRAINT {constraint} {definition}")
        for (_, definition) in index_rows:
            conn.execute(definition)
        lap("metrics indexes")
        _copy_rows(conn, "latest_metrics", "key, value, timestamp, step, is_nan, run_uuid", latest)

        # Registry: models with versions from runs of the first experiment.
        candidates = [m for m in run_meta if m[1] == 1]
        models: list[tuple[Any, ...]] = []
        versions: list[tuple[Any, ...]] = []
        aliases: list[tuple[Any, ...]] = []
        model_tags: list[tuple[Any, ...]] = []
        for m in range(shape.models):
            name = f"team-model-{m:02d}"
            picked = sorted(rng.sample(candidates, min(shape.versions, len(candidates))),
                            key=lambda meta: meta[2])
            created = picked[0][2] + DAY_MS
            models.append((name, created, picked[-1][2] + DAY_MS, f"Model {m}", "default"))
            model_tags.append(("default", "owner", rng.choice(USERS), name))
            for v, (run, exp, start, _) in enumerate(picked, start=1):
                stage = "None"
                if v == len(picked):
                    stage = "Production"
                elif v == len(picked) - 1:
                    stage = "Staging"
                source = f"mlflow-artifacts:/{exp}/{run}/artifacts/model"
                versions.append((name, v, start + DAY_MS, start + DAY_MS, "", rng.choice(USERS),
                                 stage, source, run, "READY", "", "", source, "default"))
            aliases.append(("default", name, "champion", len(picked)))
        _copy_rows(conn, "registered_models",
                   "name, creation_time, last_updated_time, description, workspace", models)
        _copy_rows(conn, "registered_model_tags", "workspace, key, value, name", model_tags)
        _copy_rows(conn, "model_versions",
                   "name, version, creation_time, last_updated_time, description, user_id,"
                   " current_stage, source, run_id, status, status_message, run_link,"
                   " storage_location, workspace", versions)
        _copy_rows(conn, "registered_model_aliases", "workspace, name, alias, version", aliases)
        conn.commit()
        lap("latest_metrics, registry")
    with psycopg.connect(pg.dsn(DB), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    lap("VACUUM ANALYZE")

    big = [m for m in run_meta if m[1] == 1]
    run_id = big[len(big) // 2][0]
    bulk = [m[0] for m in big[-10:]]
    dataset = Dataset(experiment_id="1", run_id=run_id,
                      artifact_path=f"1/{run_id}/artifacts", bulk_run_ids=bulk,
                      model_name="team-model-07" if shape.models > 7 else "team-model-00")
    return dataset, timings


def write_artifacts(root: Path, dataset: Dataset) -> None:
    """The measured run's artifacts (a model folder and a few files) under one destination."""
    base = root / dataset.artifact_path
    (base / "model").mkdir(parents=True, exist_ok=True)
    for name, text in (("MLmodel", "flavors: {}\n"), ("requirements.txt", "torch\n"),
                       ("conda.yaml", "name: x\n")):
        (base / "model" / name).write_text(text)
    (base / "confusion_matrix.png").write_bytes(b"\x89PNG" + b"0" * 2048)
    (base / "metrics.json").write_text("{}\n")


# --------------------------------------------------------------------------------------------
# Servers


@dataclass
class Side:
    name: str
    url: str
    pid: int
    workers: int
    headers: Callable[[], dict[str, str]] = field(default=lambda: {})


def wait_health(url: str, proc: subprocess.Popen[bytes] | None, log: Path,
                timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited; log {log}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"server at {url} not healthy after {timeout:.0f} s; log {log}")


@contextlib.contextmanager
def plain_mlflow(pg: PostgresServer, root: Path) -> Iterator[Side]:
    """`mlflow server --backend-store-uri postgresql://...` with MLflow's defaults, in root."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "PGPASSWORD": pg.password, "TMPDIR": str(root),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = root / "server.log"
    proc = spawn([str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", backend_uri(pg),
                  "--host", "127.0.0.1", "--port", str(port)], log, env=env, cwd=root)
    try:
        started = time.perf_counter()
        url = f"http://127.0.0.1:{port}"
        wait_health(url, proc, log)
        print(f"  plain mlflow     up in {time.perf_counter() - started:5.1f} s, 4 workers "
              f"(MLflow's default), {url}", flush=True)
        yield Side("plain", url, proc.pid, 4)
    finally:
        stop_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def settings_for(pg: PostgresServer, port: int, realm: Any = None) -> Settings:
    """The platform on the loaded database: defaults but for where PostgreSQL is."""
    data: dict[str, Any] = {
        "server": {"port": port},
        "database": {"backend": "postgresql", "host": pg.host, "port": pg.port,
                     "user": pg.superuser, "name": DB, "auth_name": f"{DB}_auth"},
    }
    client_secret = None
    if realm is not None:
        data["auth"] = {"provider": "keycloak", "keycloak_url": realm.server.url,
                        "realm": realm.realm, "client_id": realm.client_id}
        client_secret = SecretStr(realm.client_secret)
    settings = Settings.model_validate(data)
    secrets = Secrets.model_construct(db_password=SecretStr(pg.password),
                                      oidc_client_secret=client_secret)
    return settings.model_copy(update={"secrets": secrets})


@contextlib.contextmanager
def platform_side(name: str, settings: Settings, root: Path,
                  headers: Callable[[], dict[str, str]] | None = None) -> Iterator[Side]:
    state = StateDir(root)
    started = time.perf_counter()
    result = platform.up(settings, state, NullProgress())
    print(f"  {name:16s} up in {time.perf_counter() - started:5.1f} s, "
          f"{settings.effective_workers} workers, {result.record.url}", flush=True)
    try:
        yield Side(name, result.record.url, result.record.pid, settings.effective_workers,
                   headers or (lambda: {}))
    finally:
        platform.down(state)


# --------------------------------------------------------------------------------------------
# The calls


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    params: list[tuple[str, str | int | float | bool | None]] | None = None
    check: Callable[[dict[str, Any]], bool] | None = None

    def send(self, client: httpx.Client, side: Side,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
        """The call's answer; ``headers`` taken before the clock starts (a new token is a
        Keycloak grant: the client's wait, not the server's), else ``side.headers()``."""
        response = client.request(self.method, self.path, json=self.body, params=self.params,
                                  headers=side.headers() if headers is None else headers)
        if response.status_code != 200:
            raise RuntimeError(f"{side.name} {self.name}: {response.status_code} "
                               f"{response.text[:300]}")
        body: dict[str, Any] = response.json()
        if self.check is not None and not self.check(body):
            raise RuntimeError(f"{side.name} {self.name}: unexpected answer {str(body)[:300]}")
        return body


def page_body(dataset: Dataset, filter_string: str = "",
              order_by: str = "attributes.start_time DESC",
              page_token: str | None = None) -> dict[str, Any]:
    """runs/search as the experiment page sends it (mlflow/server/js: searchRuns payload)."""
    body: dict[str, Any] = {"experiment_ids": [dataset.experiment_id], "filter": filter_string,
                            "run_view_type": "ACTIVE_ONLY", "max_results": 100,
                            "order_by": [order_by]}
    if page_token:
        body["page_token"] = page_token
    return body


def _has_runs(body: dict[str, Any]) -> bool:
    return bool(body.get("runs"))


def follow_to_page(client: httpx.Client, side: Side, dataset: Dataset, page: int) -> str:
    """The page_token of page `page`, got by following next_page_token like the UI's
    "load more"; checked against MLflow's token format (an offset)."""
    token: str | None = None
    for _ in range(page - 1):
        body = Call("page", "POST", "/ajax-api/2.0/mlflow/runs/search",
                    page_body(dataset, page_token=token)).send(client, side)
        token = body.get("next_page_token")
        if not token:
            raise RuntimeError(f"fewer than {page} pages of runs: use more --runs")
    assert token is not None
    offset = json.loads(base64.b64decode(token))["offset"]
    if offset != (page - 1) * 100:
        raise RuntimeError(f"page token of page {page} has offset {offset}")
    return token


def build_calls(dataset: Dataset, page_token: str) -> list[Call]:
    search = "/ajax-api/2.0/mlflow/runs/search"
    return [
        Call("experiment page 1", "POST", search, page_body(dataset), check=_has_runs),
        Call("experiment page 20", "POST", search, page_body(dataset, page_token=page_token),
             check=_has_runs),
        Call("search metric filter", "POST", search,
             page_body(dataset, "metrics.val_accuracy > 0.9"), check=_has_runs),
        Call("search param filter", "POST", search,
             page_body(dataset, "params.optimizer = 'adam' and params.batch_size = '64'"),
             check=_has_runs),
        Call("search tag filter", "POST", search, page_body(dataset, "tags.team = 'vision'"),
             check=_has_runs),
        Call("search order by metric", "POST", search,
             page_body(dataset, order_by="metrics.val_loss ASC"), check=_has_runs),
        Call("metric history (1 run)", "GET", "/ajax-api/2.0/mlflow/metrics/get-history",
             params=[("run_id", dataset.run_id), ("metric_key", "loss")],
             check=lambda b: len(b.get("metrics", [])) > 0),
        Call("bulk interval (10 runs)", "GET",
             "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
             params=[*(("run_ids", r) for r in dataset.bulk_run_ids), ("metric_key", "loss"),
                     ("max_results", str(MAX_POINTS))],
             check=lambda b: len(b.get("metrics", [])) > 0),
        Call("search registered models", "GET",
             "/ajax-api/2.0/mlflow/registered-models/search",
             params=[("max_results", "25"), ("order_by", "name ASC")],
             check=lambda b: len(b.get("registered_models", [])) > 0),
        Call("search model versions", "GET", "/ajax-api/2.0/mlflow/model-versions/search",
             params=[("filter", f"name='{dataset.model_name}'"), ("max_results", "25")],
             check=lambda b: len(b.get("model_versions", [])) > 0),
        Call("list artifacts", "GET", "/ajax-api/2.0/mlflow/artifacts/list",
             params=[("run_id", dataset.run_id)],
             check=lambda b: len(b.get("files", [])) >= 3),
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    index = (len(ordered) - 1) * q
    low, high = math.floor(index), math.ceil(index)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


Samples = dict[tuple[str, str], list[float]]  # (call, side) -> milliseconds
# (call, side) -> seconds since the measurement began, one per sample (to date the slow ones)
Moments = dict[tuple[str, str], list[float]]


def measure(sides: list[Side], calls: list[Call], reps: int, warmup: int,
            moments: Moments | None = None) -> Samples:
    """Every call `reps` times on every side, sides alternating call by call (who goes first
    rotates), one keep-alive client per side."""
    samples: Samples = {}
    clients = {s.name: httpx.Client(base_url=s.url, timeout=120.0) for s in sides}
    began = time.perf_counter()
    try:
        for rep in range(warmup + reps):
            for call in calls:
                shift = rep % len(sides)
                for side in sides[shift:] + sides[:shift]:
                    headers = side.headers()
                    started = time.perf_counter()
                    call.send(clients[side.name], side, headers)
                    ms = 1000 * (time.perf_counter() - started)
                    if rep >= warmup:
                        samples.setdefault((call.name, side.name), []).append(ms)
                        if moments is not None:
                            moments.setdefault((call.name, side.name), []).append(
                                started - began)
    finally:
        for client in clients.values():
            client.close()
    return samples


def measure_connections(sides: list[Side], dataset: Dataset, reps: int) -> Samples:
    """Small calls on one kept-alive connection vs a new TCP connection for each call (same
    client, keep-alive off: no client set-up in the figure). A response that waits for the
    client's delayed ACK (Nagle) shows as ~40 ms more on the kept-alive connection."""
    small = [
        Call("GET experiments/get", "GET", "/ajax-api/2.0/mlflow/experiments/get",
             params=[("experiment_id", dataset.experiment_id)]),
        Call("POST experiments/search", "POST", "/ajax-api/2.0/mlflow/experiments/search",
             {"max_results": 5}),
    ]
    samples: Samples = {}
    for side in sides:
        with httpx.Client(base_url=side.url, timeout=60.0) as kept, httpx.Client(
                base_url=side.url, timeout=60.0,
                limits=httpx.Limits(max_keepalive_connections=0)) as fresh:
            for call in small:
                for _ in range(3):
                    call.send(kept, side)
                    call.send(fresh, side)
                for _ in range(reps):
                    for how, client in (("kept-alive", kept), ("new connection", fresh)):
                        headers = side.headers()
                        started = time.perf_counter()
                        call.send(client, side, headers)
                        samples.setdefault((f"{call.name} {how}", side.name), []).append(
                            1000 * (time.perf_counter() - started))
    return samples


# --------------------------------------------------------------------------------------------
# The SQL floor: MLflow's own statements for each call, replayed with psycopg


Statement = tuple[str, Any]


class SqlCapture:
    """MLflow's SqlAlchemyStore in this process; records the SQL each store call sends."""

    def __init__(self, pg: PostgresServer) -> None:
        os.environ["PGPASSWORD"] = pg.password
        from mlflow.store.model_registry.sqlalchemy_store import (
            SqlAlchemyStore as RegistryStore,
        )
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from sqlalchemy import event

        make: Any = SqlAlchemyStore  # MLflow is untyped
        self.tracking: Any = make(backend_uri(pg), "mlflow-artifacts:/")
        make = RegistryStore
        self.registry: Any = make(backend_uri(pg))
        self._seen: list[Statement] = []
        for engine in (self.tracking.engine, self.registry.engine):
            event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        self._seen.append((statement, parameters))

    def statements(self, fn: Callable[[], object]) -> list[Statement]:
        fn()  # once to warm caches (and skip the engine's first-connect queries)
        self._seen = []
        fn()
        return list(self._seen)

    def for_calls(self, dataset: Dataset, page_token: str) -> dict[str, list[Statement]]:
        from mlflow.entities import ViewType

        t, r = self.tracking, self.registry

        def search(filter_string: str = "", order: str = "attributes.start_time DESC",
                   token: str | None = None) -> Callable[[], object]:
            return lambda: t.search_runs([dataset.experiment_id], filter_string,
                                         ViewType.ACTIVE_ONLY, 100, [order], token)

        return {
            "experiment page 1": self.statements(search()),
            "experiment page 20": self.statements(search(token=page_token)),
            "search metric filter": self.statements(search("metrics.val_accuracy > 0.9")),
            "search param filter": self.statements(
                search("params.optimizer = 'adam' and params.batch_size = '64'")),
            "search tag filter": self.statements(search("tags.team = 'vision'")),
            "search order by metric": self.statements(search(order="metrics.val_loss ASC")),
            "metric history (1 run)": self.statements(
                lambda: t.get_metric_history(dataset.run_id, "loss")),
            "bulk interval (10 runs)": self.statements(
                lambda: t.get_metric_history_bulk_interval(
                    dataset.bulk_run_ids, "loss", MAX_POINTS, None, None)),
            "search registered models": self.statements(
                lambda: r.search_registered_models(max_results=25, order_by=["name ASC"])),
            "search model versions": self.statements(
                lambda: r.search_model_versions(f"name='{dataset.model_name}'", 25)),
            "list artifacts": self.statements(lambda: t.get_run(dataset.run_id)),
        }


SEARCHES: dict[str, tuple[str, str, bool]] = {  # call -> filter, order_by, page 20's token
    "experiment page 1": ("", "attributes.start_time DESC", False),
    "experiment page 20": ("", "attributes.start_time DESC", True),
    "search metric filter": ("metrics.val_accuracy > 0.9", "attributes.start_time DESC", False),
    "search param filter": ("params.optimizer = 'adam' and params.batch_size = '64'",
                            "attributes.start_time DESC", False),
    "search tag filter": ("tags.team = 'vision'", "attributes.start_time DESC", False),
    "search order by metric": ("", "metrics.val_loss ASC", False),
}


def in_process(captured: SqlCapture, dataset: Dataset, token: str, reps: int,
               page_name: str, searches: dict[str, tuple[str, str, bool]] | None = None,
               ) -> Samples:
    """The search calls in this process, split as the server's handler spends them:
    ``store`` = MLflow's SqlAlchemyStore.search_runs (SQL + ORM objects + entities),
    ``json`` = protobuf messages + message_to_json (what handlers.py does with them),
    ``gc`` = time the garbage collector ran during both."""
    import gc

    from mlflow.entities import ViewType
    from mlflow.protos.service_pb2 import SearchRuns
    from mlflow.utils.proto_json_utils import message_to_json

    gc_ms = [0.0]
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_ms[0] += 1000 * (time.perf_counter() - gc_started[0])

    samples: Samples = {}
    chosen = searches or SEARCHES
    gc.callbacks.append(on_gc)
    try:
        # MLflow's own path first, at Python's collector defaults (what plain `mlflow server`
        # runs with).
        for rep in range(reps + 2):
            for name, (filter_string, order, paged) in chosen.items():
                gc_ms[0] = 0.0
                started = time.perf_counter()
                runs = captured.tracking.search_runs(
                    [dataset.experiment_id], filter_string, ViewType.ACTIVE_ONLY, 100, [order],
                    token if paged else None)
                stored = time.perf_counter()
                response = SearchRuns.Response()
                response.runs.extend([run.to_proto() for run in runs])
                if runs.token:
                    response.next_page_token = runs.token
                body = message_to_json(response)
                done = time.perf_counter()
                message_to_json(response, pretty=False)
                compact = time.perf_counter() - done
                if rep >= 2:
                    call = name.replace("page 20", page_name)
                    # The handlers' message_to_json pretty-prints (indent=2: the pure-Python
                    # encoder, 2.3x the bytes); compact for comparison.
                    samples.setdefault((call, "json compact"), []).append(1000 * compact)
                    samples.setdefault((call, "bytes"), []).append(float(len(body)))
                    samples.setdefault((call, "store"), []).append(1000 * (stored - started))
                    samples.setdefault((call, "json"), []).append(1000 * (done - stored))
                    samples.setdefault((call, "gc"), []).append(gc_ms[0])
                    samples.setdefault((call, "total"), []).append(1000 * (done - started))
        # The platform's path under the platform's collector settings (gunicorn_conf: the
        # import-time heap frozen, higher thresholds), as its workers run it; at the defaults
        # its rows were charged the collections MLflow's path had provoked.
        with platform_gc():
            for rep in range(reps + 2):
                for name, (filter_string, order, paged) in chosen.items():
                    started_rows = time.perf_counter()
                    fast_runs_search.runs_json(
                        captured.tracking, [dataset.experiment_id], filter_string,
                        ViewType.ACTIVE_ONLY, 100, [order], token if paged else None)
                    rows_json = time.perf_counter() - started_rows
                    if rep >= 2:
                        call = name.replace("page 20", page_name)
                        samples.setdefault((call, "rows json"), []).append(1000 * rows_json)
    finally:
        gc.callbacks.remove(on_gc)
    return samples


@contextlib.contextmanager
def platform_gc() -> Iterator[None]:
    """The collector as the platform's workers have it, then back to what it was."""
    import gc

    from mlflow_stack.server.tunables import GC_THRESHOLDS

    default = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*default)
        gc.unfreeze()


GC_VARIANTS: tuple[tuple[str, bool, tuple[int, int, int] | None], ...] = (
    ("default thresholds (700,10,10)", False, None),
    ("gc.freeze() after imports", True, None),
    ("freeze + threshold 10000,10,10", True, (10_000, 10, 10)),
    ("freeze + threshold 50000,20,100", True, (50_000, 20, 100)),
    ("no gc at all (bound)", True, (0, 0, 0)),
)


def gc_variants(captured: SqlCapture, dataset: Dataset, reps: int) -> list[tuple[str, Samples]]:
    """The experiment page (search + JSON) in this process under each GC setting, in order
    (freezing cannot be undone fairly, so default comes first). This process has imported
    MLflow, SQLAlchemy and the harness: a heap like a server worker's."""
    import gc

    results = []
    default = gc.get_threshold()
    try:
        for label, freeze, threshold in GC_VARIANTS:
            if freeze:
                gc.collect()
                gc.freeze()
            gc.set_threshold(*(threshold or default))
            if threshold == (0, 0, 0):
                gc.disable()
            only_page = {"experiment page 1": SEARCHES["experiment page 1"]}
            results.append((label, in_process(captured, dataset, "", reps, "", only_page)))
    finally:
        gc.enable()
        gc.set_threshold(*default)
        gc.unfreeze()
    return results


RUN_INFO_SQL = (
    "SELECT run_uuid, name, experiment_id, user_id, status, start_time, end_time,"
    " artifact_uri, lifecycle_stage FROM runs WHERE experiment_id = %s"
    " AND lifecycle_stage = 'active' ORDER BY start_time DESC, run_uuid LIMIT %s OFFSET %s")


def direct_page(conn: psycopg.Connection[Any], experiment_id: str, offset: int = 0) -> str:
    """The experiment page's answer (same JSON shape as MLflow's runs/search: info, data with
    metrics, params and tags) straight from psycopg rows to json.dumps: what a search without
    ORM objects and protobuf costs — the lower bound of a faster server path."""
    runs = conn.execute(RUN_INFO_SQL, (int(experiment_id), 101, offset)).fetchall()
    token = None
    if len(runs) > 100:
        runs = runs[:100]
        token = base64.b64encode(json.dumps({"offset": offset + 100}).encode()).decode()
    ids = [row[0] for row in runs]
    data: dict[str, dict[str, list[dict[str, Any]]]] = {
        run: {"metrics": [], "params": [], "tags": []} for run in ids}
    for run, key, value, ts, step in conn.execute(
            "SELECT run_uuid, key, value, timestamp, step FROM latest_metrics"
            " WHERE run_uuid = ANY(%s)", (ids,)):
        data[run]["metrics"].append({"key": key, "value": value, "timestamp": ts, "step": step})
    for table in ("params", "tags"):
        for run, key, value in conn.execute(
                f"SELECT run_uuid, key, value FROM {table} WHERE run_uuid = ANY(%s)", (ids,)):
            data[run][table].append({"key": key, "value": value})
    conn.rollback()
    answer: dict[str, Any] = {"runs": [
        {"info": {"run_id": run, "run_uuid": run, "run_name": name,
                  "experiment_id": str(exp), "user_id": user, "status": status,
                  "start_time": start, "end_time": end, "artifact_uri": uri,
                  "lifecycle_stage": stage},
         "data": data[run], "inputs": {}, "outputs": {}}
        for run, name, exp, user, status, start, end, uri, stage in runs]}
    if token:
        answer["next_page_token"] = token
    return json.dumps(answer)


def direct_samples(pg: PostgresServer, dataset: Dataset, reps: int) -> list[float]:
    with psycopg.connect(pg.dsn(DB)) as conn:
        direct_page(conn, dataset.experiment_id)
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            direct_page(conn, dataset.experiment_id)
            times.append(1000 * (time.perf_counter() - started))
    return times


def profile_page(captured: SqlCapture, dataset: Dataset, top: int = 25) -> str:
    """cProfile of five experiment pages (search + JSON) in this process, by own time, with GC
    frozen and its thresholds raised."""
    import cProfile
    import io
    import pstats

    from mlflow.entities import ViewType
    from mlflow.protos.service_pb2 import SearchRuns
    from mlflow.utils.proto_json_utils import message_to_json

    def page() -> None:
        runs = captured.tracking.search_runs([dataset.experiment_id], "", ViewType.ACTIVE_ONLY,
                                             100, ["attributes.start_time DESC"], None)
        response = SearchRuns.Response()
        response.runs.extend([run.to_proto() for run in runs])
        message_to_json(response)

    page()
    # As in the server with GC tuned: without it, collections are charged to whichever
    # function allocated when they struck.
    with platform_gc():
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5):
            page()
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def replay(conn: psycopg.Connection[Any], statements: list[Statement]) -> float:
    """Milliseconds to run the statements in one transaction and fetch every row."""
    started = time.perf_counter()
    for statement, params in statements:
        cur = conn.execute(statement, params or None)
        if cur.description is not None:
            cur.fetchall()
    conn.rollback()
    return 1000 * (time.perf_counter() - started)


def sql_floor(pg: PostgresServer, captured: dict[str, list[Statement]], reps: int) -> Samples:
    samples: Samples = {}
    with psycopg.connect(pg.dsn(DB)) as conn:
        for rep in range(reps + 2):
            for name, statements in captured.items():
                ms = replay(conn, statements)
                if rep >= 2:
                    samples.setdefault((name, "sql"), []).append(ms)
    return samples


def _shorten(line: str, width: int = 220) -> str:
    """Plan lines with 100 run ids in them, cut to something readable."""
    return line if len(line) <= width else line[:width] + f"... ({len(line)} chars)"


def slowest_statement(pg: PostgresServer, statements: list[Statement]) -> tuple[float, str]:
    """(ms, its SQL and EXPLAIN ANALYZE text) of the slowest statement of a call."""
    with psycopg.connect(pg.dsn(DB)) as conn:
        timed = []
        for statement, params in statements:
            started = time.perf_counter()
            cur = conn.execute(statement, params or None)
            if cur.description is not None:
                cur.fetchall()
            timed.append((1000 * (time.perf_counter() - started), statement, params))
        ms, statement, params = max(timed, key=lambda item: item[0])
        client = psycopg.ClientCursor(conn)
        client.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params or None)
        plan = " ".join(statement.split())[:700] + "\n" + "\n".join(
            _shorten(str(row[0])) for row in client.fetchall())
        conn.rollback()
    return ms, plan


# --------------------------------------------------------------------------------------------
# Tuning candidates


@dataclass(frozen=True)
class Candidate:
    name: str
    statements: tuple[str, ...]  # run with autocommit; ALTER SYSTEM ones are followed by a reload
    without: tuple[str, ...]  # in a transaction that is rolled back: this candidate undone
    why: str


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("jit off", ("ALTER SYSTEM SET jit = off",), ("SET LOCAL jit = on",),
              "JIT compiles expressions of queries whose cost estimate is high; compiling "
              "costs more than it saves on short queries"),
    Candidate("work_mem 16MB, random_page_cost 1.1",
              ("ALTER SYSTEM SET work_mem = '16MB'", "ALTER SYSTEM SET random_page_cost = 1.1",
               "ALTER SYSTEM SET effective_cache_size = '1GB'"),
              ("SET LOCAL work_mem = '4MB'", "SET LOCAL random_page_cost = 4",
               "SET LOCAL effective_cache_size = '4GB'"),
              "sorts of a whole experiment's runs in memory; SSD-like page costs"),
    # Tried, no clear gain (kept so that the finding can be reproduced; not in the module):
    Candidate("runs_experiment_page",
              ("CREATE INDEX IF NOT EXISTS scale_runs_experiment_page ON runs (experiment_id, "
               "(CASE WHEN start_time IS NULL THEN 1 ELSE 0 END), start_time DESC, run_uuid)",),
              ("DROP INDEX scale_runs_experiment_page",),
              "the experiment page's ORDER BY (MLflow's exact expression) per experiment"),
    Candidate("latest_metrics_key_value",
              ("CREATE INDEX IF NOT EXISTS scale_latest_metrics_key_value "
               "ON latest_metrics (key, value, run_uuid)",),
              ("DROP INDEX scale_latest_metrics_key_value",),
              "metric filters and order by a metric"),
    # What mlflow_stack.components.postgres_tuning recommends:
    *(Candidate(index.name, (index.ddl(),), (f"DROP INDEX {index.name}",), index.why)
      for index in postgres_tuning.INDEXES),
)


def apply_candidate(pg: PostgresServer, candidate: Candidate) -> float:
    started = time.perf_counter()
    with psycopg.connect(pg.dsn(DB), autocommit=True) as conn:
        for statement in candidate.statements:
            conn.execute(statement)
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("ANALYZE")
    return time.perf_counter() - started


def ab_floor(pg: PostgresServer, statements: dict[str, list[Statement]], reps: int,
             ) -> dict[str, Samples]:
    """With every candidate applied: each call's SQL with all of them vs with one undone
    (SET LOCAL / DROP INDEX in a transaction that is rolled back), interleaved rep by rep, so
    the ratio is what that one candidate buys, measured in the same seconds. The servers must
    be idle (DROP INDEX locks the table until the rollback)."""
    results: dict[str, Samples] = {}
    with psycopg.connect(pg.dsn(DB)) as conn:
        for candidate in CANDIDATES:
            samples: Samples = {}
            for rep in range(reps + 2):
                for name, stmts in statements.items():
                    for side in (("with", "without") if rep % 2 else ("without", "with")):
                        if side == "without":
                            for statement in candidate.without:
                                conn.execute(statement)
                        ms = replay(conn, stmts)  # ends with a rollback
                        if rep >= 2:
                            samples.setdefault((name, side), []).append(ms)
            results[candidate.name] = samples
    return results


def print_ab(calls: list[str], results: dict[str, Samples]) -> None:
    print("\nwhat each candidate buys on the SQL floor, all others applied: p50 with / p50 "
          "without (interleaved; < 1 = faster)")
    names = list(results)
    print(f"  {'call':26s} " + " ".join(f"{n[:18]:>18s}" for n in names))
    for call in calls:
        cells = []
        for name in names:
            with_ = percentile(results[name][(call, "with")], 0.5)
            without = percentile(results[name][(call, "without")], 0.5)
            cells.append(f"{with_:6.1f}/{without:6.1f} {with_ / without:4.2f}")
        print(f"  {call:26s} " + " ".join(f"{c:>18s}" for c in cells))


# --------------------------------------------------------------------------------------------
# Report


def fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:7.1f}"


def print_table(title: str, calls: list[str], samples: Samples, sides: list[str],
                base: str, floor: Samples) -> None:
    print(f"\n{title}  (ms; ratio = p50 / p50 of {base})")
    header = f"{'call':26s}"
    for side in sides:
        header += f" {side + ' p50':>12s} {'p95':>7s}"
        if side != base:
            header += f" {'ratio':>6s}"
    header += f" {'SQL floor p50':>14s}"
    print(header)
    for call in calls:
        line = f"{call:26s}"
        base_p50 = percentile(samples.get((call, base), []), 0.5)
        for side in sides:
            values = samples.get((call, side), [])
            p50 = percentile(values, 0.5)
            line += f" {fmt(p50):>12s} {fmt(percentile(values, 0.95)):>7s}"
            if side != base:
                line += f" {p50 / base_p50:5.2f}x"
        line += f" {fmt(percentile(floor.get((call, 'sql'), []), 0.5)):>14s}"
        print(line)


def print_slow(samples: Samples, moments: Moments, factor: float = 4.0) -> None:
    """Calls that took over `factor` x their p50, with when they happened: a cache that expires
    shows as slow calls at a steady interval."""
    lines = []
    for key, values in samples.items():
        p50 = percentile(values, 0.5)
        slow = [(at, ms) for at, ms in zip(moments[key], values, strict=True)
                if ms > factor * p50 and ms > 20]
        if slow:
            when = ", ".join(f"{ms:.0f} ms at {at:.0f} s" for at, ms in slow)
            lines.append(f"  {key[0]} / {key[1]} (p50 {p50:.0f} ms): {when}")
    if lines:
        print(f"\ncalls slower than {factor:g}x their p50 (seconds since measuring began):")
        print("\n".join(lines))


def print_distribution(samples: Samples, call: str, sides: list[str]) -> None:
    """Deciles of one call, to show a bimodal split if there is one."""
    for side in sides:
        values = samples.get((call, side), [])
        deciles = " ".join(f"{percentile(values, q / 10):6.0f}" for q in range(11))
        print(f"  {call} {side:10s} min..max by deciles: {deciles}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--metrics", type=int, default=10, help="metric keys per run (<= 10)")
    parser.add_argument("--steps", type=int, default=100, help="steps per metric")
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--versions", type=int, default=10, help="versions per model")
    parser.add_argument("--reps", type=int, default=25, help="measured calls per call and side")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tuning", action="store_true",
                        help="apply the tuning candidates step by step and re-measure")
    parser.add_argument("--keycloak", action="store_true",
                        help="also the platform with auth.provider keycloak (bearer token)")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN ANALYZE of each call's slowest statement")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile of the experiment page's search in this process")
    parser.add_argument("--gc-threshold", default="",
                        help="also the platform with these gc thresholds in its workers "
                             "(bench/gc_site, e.g. 10000,10,10); the platform's own are "
                             "50000,20,100")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    shape = Shape(args.runs, min(args.metrics, len(METRIC_KEYS)), args.steps, args.models,
                  args.versions)
    if shape.runs < 2000 * 2:  # page 20 of the biggest experiment (half the runs) needs 2000
        print("note: fewer than 4000 runs: page 20 may not exist; it is then page "
              "max(2, ...)", flush=True)

    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="mlflow-scale-"))
    pg: PostgresServer | None = None
    keycloak: Any = None
    try:
        print("starting PostgreSQL ...", flush=True)
        pg = start_postgres(root / "pg")
        schema_s = create_schema(pg)
        print(f"schema by mlflow db upgrade in {schema_s:.1f} s; loading {shape.describe()}",
              flush=True)
        started = time.perf_counter()
        dataset, stages = load(pg, shape, args.seed)
        load_s = time.perf_counter() - started
        with psycopg.connect(pg.dsn(DB)) as conn:
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(%s))", (DB,)).fetchone()
        print(f"LOAD: {load_s:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
              + f"); database {size[0] if size else '?'}", flush=True)

        server = pg  # not None from here on (for the lambdas below)
        captured = SqlCapture(pg)
        contenders: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Side]]]] = [
            ("plain", lambda: plain_mlflow(server, root / "plain")),
            ("platform", lambda: platform_side(
                "platform", settings_for(server, free_port()), root / "platform")),
        ]
        if args.gc_threshold:
            contenders.append(("platform+gc", lambda: gc_side(
                server, root / "platform-gc", args.gc_threshold)))
        if args.keycloak:
            keycloak, realm_side = start_keycloak_side(server, root)
            contenders.append(("sso", realm_side))
        with contextlib.ExitStack() as stack:
            print("starting servers ...", flush=True)
            sides = [stack.enter_context(make()) for _, make in contenders]
            # `up` created the platform's search indexes (components/postgres_indexes.py) in
            # the database every side shares: the first pass is MLflow's schema as shipped
            # for all of them (--tuning applies them again, with the other candidates).
            with psycopg.connect(pg.dsn(DB), autocommit=True) as conn:
                for index in postgres_tuning.INDEXES:
                    conn.execute(f"DROP INDEX IF EXISTS {index.name}")
            write_artifacts(root / "plain" / "mlartifacts", dataset)
            for side in sides:
                if side.name != "plain":
                    write_artifacts(StateDir(root / side.name.replace("+", "-")).artifacts_dir,
                                    dataset)
            page = max(2, min(20, (shape.runs // 2) // 100 - 1))
            with httpx.Client(base_url=sides[0].url, timeout=120.0) as client:
                token = follow_to_page(client, sides[0], dataset, page)
            calls = build_calls(dataset, token)
            if page != 20:
                calls = [Call(c.name.replace("page 20", f"page {page}"), c.method, c.path,
                              c.body, c.params, c.check) for c in calls]
            statements = captured.for_calls(dataset, token)
            if page != 20:
                statements = {k.replace("page 20", f"page {page}"): v
                              for k, v in statements.items()}
            names = [c.name for c in calls]
            side_names = [s.name for s in sides]

            print(f"measuring {len(calls)} calls x {args.reps} on {', '.join(side_names)} ...",
                  flush=True)
            floor = sql_floor(pg, statements, args.reps)
            moments: Moments = {}
            samples = measure(sides, calls, args.reps, args.warmup, moments)
            print_table("MLflow's schema as shipped", names, samples, side_names, "plain", floor)
            print_distribution(samples, names[0], side_names)
            print_slow(samples, moments)
            connections = measure_connections(sides, dataset, 30)
            print("\nsmall calls, one kept-alive connection vs a new connection per call "
                  "(p50 / p95 ms):")
            for kind in ("GET experiments/get", "POST experiments/search"):
                for side in sides:
                    keep = connections[(f"{kind} kept-alive", side.name)]
                    new = connections[(f"{kind} new connection", side.name)]
                    print(f"  {kind:24s} {side.name:9s} ({side.workers} workers)  kept-alive "
                          f"{percentile(keep, 0.5):6.1f} / {percentile(keep, 0.95):6.1f}   "
                          f"new connection {percentile(new, 0.5):6.1f} / "
                          f"{percentile(new, 0.95):6.1f}")
            print("\nstatements per call (MLflow's SqlAlchemyStore): " + ", ".join(
                f"{k} {len(v)}" for k, v in statements.items()))
            inproc = in_process(captured, dataset, token, args.reps, f"page {page}")
            print_breakdown(names, samples, inproc, floor)
            print_distribution(inproc, names[0], ["store", "json", "gc"])
            print("\nthe experiment page in this process (search_runs + JSON) by GC setting:")
            print(f"  {'setting':34s} {'p50':>7s} {'p95':>7s} {'max':>7s} {'gc p50':>7s} "
                  f"{'gc p95':>7s}")
            for label, result in gc_variants(captured, dataset, max(args.reps, 20)):
                total = result[("experiment page 1", "total")]
                gc_time = result[("experiment page 1", "gc")]
                print(f"  {label:34s} {percentile(total, 0.5):7.1f} "
                      f"{percentile(total, 0.95):7.1f} {max(total):7.1f} "
                      f"{percentile(gc_time, 0.5):7.1f} {percentile(gc_time, 0.95):7.1f}")
            direct = direct_samples(pg, dataset, max(args.reps, 20))
            print(f"  {'no ORM, no protobuf (psycopg rows -> json.dumps)':34s} "
                  f"{percentile(direct, 0.5):7.1f} {percentile(direct, 0.95):7.1f} "
                  f"{max(direct):7.1f}   (a lower bound for a faster search path)")
            if args.profile:
                print("\ncProfile of 5 experiment pages in this process (search_runs + JSON; gc "
                      "frozen, thresholds 50000,20,100):")
                print(profile_page(captured, dataset))
            if args.explain:
                explain_all(pg, statements)

            if args.tuning:
                tuned = run_tuning(pg, sides, calls, statements, args)
                tuned_floor = sql_floor(pg, statements, args.reps)
                print_table("every side on the tuned database (all candidates applied)", names,
                            tuned, side_names, "plain", tuned_floor)
                print_distribution(tuned, names[0], side_names)
                print_table("plain MLflow as shipped (first pass) vs the sides on the tuned "
                            "database (last pass): ratios across passes, read with care", names,
                            {**{k: v for k, v in samples.items() if k[1] == "plain"},
                             **{(k[0], k[1] + "+t"): v for k, v in tuned.items()
                                if k[1] != "plain"}},
                            ["plain", *(s + "+t" for s in side_names if s != "plain")],
                            "plain", tuned_floor)
                if args.explain:
                    explain_all(pg, statements)
        print(f"\ntotal {time.perf_counter() - began:.0f} s; goal: every call <= 0.5x plain, "
              "experiment page p95 < 300 ms")
        return 0
    finally:
        if keycloak is not None:
            keycloak.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def print_breakdown(calls: list[str], samples: Samples, inproc: Samples,
                    floor: Samples) -> None:
    """Where a search's time goes: p50 of each part (the parts are measured apart)."""
    print("\nwhere the time of a search goes (p50 ms): server = platform over HTTP; rows json ="
          " the platform's runs/search (server/patches/fast_runs_search.py) in this process,"
          " with the platform's collector settings; sql = the floor; rest = server - rows json"
          " (HTTP, Flask, middleware). MLflow's own"
          " path, in this process: store = SqlAlchemyStore.search_runs (SQL + ORM objects +"
          " entities); json = protobuf + message_to_json as MLflow has it (pretty); compact"
          " json = message_to_json(pretty=False) alone; gc = garbage collection during both"
          " (Python's defaults, as plain `mlflow server` runs)")
    print(f"  {'call':26s} {'server':>7s} {'rows json':>9s} {'of it sql':>9s} {'rest':>6s} |"
          f" {'store':>7s} {'json':>6s} {'compact json':>12s} {'gc':>5s} {'JSON KB':>8s}")
    for call in calls:
        if (call, "store") not in inproc:
            continue
        server = percentile(samples[(call, "platform")], 0.5)
        rows = percentile(inproc[(call, "rows json")], 0.5)
        print(f"  {call:26s} {server:7.1f} {rows:9.1f} "
              f"{percentile(floor[(call, 'sql')], 0.5):9.1f} {server - rows:6.1f} | "
              f"{percentile(inproc[(call, 'store')], 0.5):7.1f} "
              f"{percentile(inproc[(call, 'json')], 0.5):6.1f} "
              f"{percentile(inproc[(call, 'json compact')], 0.5):12.1f} "
              f"{percentile(inproc[(call, 'gc')], 0.5):5.1f} "
              f"{percentile(inproc[(call, 'bytes')], 0.5) / 1024:8.0f}")


def explain_all(pg: PostgresServer, statements: dict[str, list[Statement]]) -> None:
    for name, stmts in statements.items():
        ms, plan = slowest_statement(pg, stmts)
        print(f"\n--- {name}: slowest of {len(stmts)} statements, {ms:.1f} ms ---\n{plan}")


def run_tuning(pg: PostgresServer, sides: list[Side], calls: list[Call],
               statements: dict[str, list[Statement]], args: argparse.Namespace) -> Samples:
    """Apply every candidate, show what each buys on the SQL floor (A/B in the same seconds),
    then measure every side again on the tuned database."""
    print()
    for candidate in CANDIDATES:
        seconds = apply_candidate(pg, candidate)
        print(f"+ {candidate.name} (applied in {seconds:.1f} s): {candidate.why}")
    print_ab([c.name for c in calls], ab_floor(pg, statements, args.reps))
    return measure(sides, calls, args.reps, 1)


@contextlib.contextmanager
def gc_side(pg: PostgresServer, root: Path, threshold: str) -> Iterator[Side]:
    """The platform with bench/gc_site/sitecustomize.py on its server's PYTHONPATH (`up`
    passes PYTHON* variables through to the server, and only those of ours): other thresholds
    in its workers."""
    extra = {"PYTHONPATH": str(Path(__file__).resolve().parent / "gc_site"),
             "PYTHONSCALE_GC_THRESHOLD": threshold}
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        with platform_side("platform+gc", settings_for(pg, free_port()), root) as side:
            yield side
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_keycloak_side(pg: PostgresServer, root: Path) -> tuple[
        Any, Callable[[], contextlib.AbstractContextManager[Side]]]:
    """Keycloak (harness) and a realm; the platform with auth.provider keycloak as a side."""
    from harness.keycloak import (
        default_cache_dir,
        ensure_keycloak_dist,
        password_grant,
        start_keycloak,
    )
    from harness.sso import USER_ROLE, provision_realm

    print("starting Keycloak ...", flush=True)
    keycloak = start_keycloak(root / "kc", ensure_keycloak_dist(default_cache_dir()))
    port = free_port()
    realm = provision_realm(keycloak, f"scale-{uuid.uuid4().hex[:6]}",
                            f"http://127.0.0.1:{port}", users={"bench": [USER_ROLE]})
    user = realm.users["bench"]
    token: dict[str, Any] = {"value": "", "expires": 0.0}

    def headers() -> dict[str, str]:
        if time.time() > token["expires"] - 120:
            grant = password_grant(keycloak, realm.realm, realm.client_id, user.username,
                                   user.password, realm.client_secret)
            token["value"] = grant["access_token"]
            token["expires"] = time.time() + float(grant.get("expires_in", 300))
        return {"Authorization": f"Bearer {token['value']}"}

    return keycloak, lambda: platform_side("sso", settings_for(pg, port, realm), root / "sso",
                                           headers)


if __name__ == "__main__":
    raise SystemExit(main())
