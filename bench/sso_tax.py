"""The SSO tax: the same REST load with auth off and with Keycloak bearer tokens, same backend.

Starts a real PostgreSQL and Keycloak (the test harness), brings the platform up twice on the
same PostgreSQL server — ``auth.provider: none`` and ``auth.provider: keycloak`` with everything
else equal (default worker count) — and alternates short rounds of each workload between the two
(these machines are noisy: compare only within a run, and only paired rounds). Workloads:
log-metric, log-batch of 100 metrics, search-runs; N client threads, each phase bounded by a
request count and a time limit. Prints rps(auth) / rps(no auth) per workload, and the server's
CPU time per request (its whole process tree), which other load on the machine disturbs less.

    .venv/bin/python bench/sso_tax.py [--rounds 4] [--seconds 6] [--threads 4] [--plain]
                                      [--workspaces]

``--plain`` adds plain mlflow-oidc-auth (``auth.app_name: oidc-auth``) as a third side, to show
what our app (``mlflow-stack-sso``) saves; the run then takes ~50 % longer. ``--workspaces`` adds
our app with ``server.workspaces: true`` (requests without the header, in ``default``, which
``up`` grants the user role) as another side.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness.keycloak import (
    KeycloakServer,
    default_cache_dir,
    ensure_keycloak_dist,
    password_grant,
    start_keycloak,
)
from harness.ports import free_port
from harness.postgres import PostgresServer, start_postgres
from harness.sso import USER_ROLE, SsoRealm, provision_realm
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

API = "/api/2.0/mlflow"
WORKLOADS = ("log-metric", "log-batch", "search-runs")
SEARCH_RUNS = 20  # runs in the searched experiment (each with params and a metric)
TOKEN_MARGIN = 120.0  # refresh a token this long before it expires


class TokenSource:
    """One password-grant token per run, refreshed only when it is about to expire."""

    def __init__(self, fetch: Callable[[], dict[str, Any]]) -> None:
        self._fetch = fetch
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()
        self.grants = 0

    def header(self) -> dict[str, str]:
        with self._lock:
            if time.time() > self._expires - TOKEN_MARGIN:
                response = self._fetch()
                self._token = str(response["access_token"])
                self._expires = time.time() + float(response.get("expires_in", 300))
                self.grants += 1
            return {"Authorization": f"Bearer {self._token}"}


@dataclass
class Target:
    name: str
    url: str
    pid: int
    tokens: TokenSource | None
    runs: list[str] = field(default_factory=list)  # one run per client thread
    search_experiment: str = ""

    def headers(self) -> dict[str, str]:
        return self.tokens.header() if self.tokens else {}


@dataclass
class Phase:
    requests: int
    errors: int
    seconds: float
    cpu_seconds: float  # user + system time of the server's process tree

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by the server process and its workers."""
    total = 0.0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url.path}: {response.status_code} "
                           f"{response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def prepare(target: Target, threads: int) -> None:
    """Per-target data: one run per client thread, and an experiment with runs to search."""
    with httpx.Client(base_url=target.url, timeout=60.0) as client:
        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            return _check(client.post(f"{API}{path}", json=body, headers=target.headers()))

        tag = uuid.uuid4().hex[:6]
        load = post("/experiments/create", {"name": f"bench-load-{target.name}-{tag}"})
        target.runs = [post("/runs/create", {"experiment_id": load["experiment_id"]})
                       ["run"]["info"]["run_id"] for _ in range(threads)]
        search = post("/experiments/create", {"name": f"bench-search-{target.name}-{tag}"})
        target.search_experiment = str(search["experiment_id"])
        for i in range(SEARCH_RUNS):
            run = post("/runs/create", {"experiment_id": target.search_experiment})
            post("/runs/log-batch", {
                "run_id": run["run"]["info"]["run_id"],
                "params": [{"key": f"p{j}", "value": str(i * j)} for j in range(5)],
                "metrics": [{"key": "loss", "value": 1.0 / (i + 1), "timestamp": 0, "step": 0}],
            })


def request_for(workload: str, target: Target, thread: int, seq: int,
                ) -> tuple[str, dict[str, Any]]:
    now = int(time.time() * 1000)
    run_id = target.runs[thread]
    if workload == "log-metric":
        return "/runs/log-metric", {"run_id": run_id, "key": "m", "value": float(seq),
                                    "timestamp": now, "step": seq}
    if workload == "log-batch":
        return "/runs/log-batch", {"run_id": run_id, "metrics": [
            {"key": f"m{k}", "value": float(seq + k), "timestamp": now, "step": seq}
            for k in range(100)]}
    return "/runs/search", {"experiment_ids": [target.search_experiment], "max_results": 50}


def run_phase(target: Target, workload: str, threads: int, max_requests: int,
              max_seconds: float) -> Phase:
    """`threads` clients (keep-alive) until max_requests are done or max_seconds pass."""
    lock = threading.Lock()
    counts = {"issued": 0, "done": 0, "errors": 0}
    deadline = time.perf_counter() + max_seconds
    cpu_before = tree_cpu(target.pid)
    start = time.perf_counter()

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=target.url, timeout=60.0) as client:
            seq = 0
            while time.perf_counter() < deadline:
                with lock:
                    if counts["issued"] >= max_requests:
                        return
                    counts["issued"] += 1
                seq += 1
                path, body = request_for(workload, target, index, seq)
                try:
                    ok = client.post(f"{API}{path}", json=body,
                                     headers=target.headers()).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    counts["done" if ok else "errors"] += 1

    workers = [threading.Thread(target=client_loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - start
    return Phase(counts["done"], counts["errors"], seconds, tree_cpu(target.pid) - cpu_before)


def settings_for(pg: PostgresServer, port: int, realm: SsoRealm | None,
                 app_name: str | None = None, workspaces: bool = False) -> Settings:
    """Identical settings but for `auth` (and workspaces): same PostgreSQL server and database,
    default workers."""
    data: dict[str, Any] = {
        "server": {"port": port, "workspaces": workspaces},
        "database": {"backend": "postgresql", "host": pg.host, "port": pg.port,
                     "user": pg.superuser, "name": "mlflow_bench",
                     "auth_name": "mlflow_bench_auth"},
    }
    secrets: dict[str, Any] = {"db_password": SecretStr(pg.password)}
    if realm is not None:
        data["auth"] = {"provider": "keycloak", "keycloak_url": realm.server.url,
                        "realm": realm.realm, "client_id": realm.client_id,
                        **({"app_name": app_name} if app_name else {})}
        secrets["oidc_client_secret"] = SecretStr(realm.client_secret)
    settings = Settings.model_validate(data)
    return settings.model_copy(update={"secrets": Secrets.model_construct(**secrets)})


@contextlib.contextmanager
def platform_up(settings: Settings, state_dir: Path) -> Iterator[tuple[str, int]]:
    """(url, server pid) of the platform brought up with these settings, down afterwards."""
    state = StateDir(state_dir)
    started = time.perf_counter()
    result = platform.up(settings, state, NullProgress())
    label = settings.auth.app_name if settings.auth.provider == "keycloak" else "no auth"
    print(f"  {label:16s} up in {time.perf_counter() - started:5.1f} s, "
          f"{settings.effective_workers} workers, {result.record.url}", flush=True)
    try:
        yield result.record.url, result.record.pid
    finally:
        platform.down(state)


def summary(phases: dict[tuple[str, str], list[Phase]], sides: list[Target]) -> bool:
    """Print one line per workload and auth side; False if any request failed."""
    base = sides[0].name
    print(f"{'workload':12s} {'side':16s} {'rps':>7s} {'vs no auth':>10s} {'paired median':>14s} "
          f"{'server CPU ms/req':>18s}")
    ok = True
    for workload in WORKLOADS:
        b = phases[(workload, base)]
        rps_b = sum(p.requests for p in b) / sum(p.seconds for p in b)
        for side in sides:
            a = phases[(workload, side.name)]
            rps_a = sum(p.requests for p in a) / sum(p.seconds for p in a)
            cpu = 1000 * sum(p.cpu_seconds for p in a) / max(sum(p.requests for p in a), 1)
            errors = sum(p.errors for p in a)
            ok &= errors == 0
            ratio = paired = ""
            if side.name != base:
                ratio = f"{rps_a / rps_b:.2f}x"
                pairs = [x.rps / y.rps for x, y in zip(a, b, strict=True) if y.rps]
                paired = f"{statistics.median(pairs):.2f}x" if pairs else "-"
            print(f"{workload:12s} {side.name:16s} {rps_a:7.1f} {ratio:>10s} {paired:>14s} "
                  f"{cpu:18.1f}" + (f"  ({errors} errors!)" if errors else ""))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per workload")
    parser.add_argument("--seconds", type=float, default=6.0, help="time limit of one phase")
    parser.add_argument("--max-requests", type=int, default=2000, help="count limit of a phase")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per side")
    parser.add_argument("--plain", action="store_true",
                        help="also run plain mlflow-oidc-auth (app oidc-auth) as a third side")
    parser.add_argument("--workspaces", action="store_true",
                        help="also run our app with server.workspaces on as another side")
    args = parser.parse_args()

    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="sso-tax-"))
    keycloak: KeycloakServer | None = None
    pg: PostgresServer | None = None
    try:
        print("starting PostgreSQL and Keycloak ...", flush=True)
        pg = start_postgres(root / "pg")
        keycloak = start_keycloak(root / "kc", ensure_keycloak_dist(default_cache_dir()))
        ports = [free_port() for _ in range(4)]
        realm = provision_realm(keycloak, f"bench-{uuid.uuid4().hex[:6]}",
                                f"http://127.0.0.1:{ports[1]}", users={"bench": [USER_ROLE]})
        user = realm.users["bench"]
        tokens = TokenSource(lambda: password_grant(
            keycloak, realm.realm, realm.client_id, user.username, user.password,
            realm.client_secret))
        contenders: list[tuple[str, Settings, TokenSource | None]] = [
            ("no-auth", settings_for(pg, ports[0], None), None),
            ("mlflow-stack-sso", settings_for(pg, ports[1], realm), tokens),
        ]
        if args.plain:
            contenders.append(("oidc-auth", settings_for(pg, ports[2], realm, "oidc-auth"),
                               tokens))
        if args.workspaces:
            contenders.append(("sso+workspaces",
                               settings_for(pg, ports[3], realm, workspaces=True), tokens))
        with contextlib.ExitStack() as stack:
            sides = [Target(name, *stack.enter_context(platform_up(settings, root / name)),
                            source) for name, settings, source in contenders]
            for target in sides:
                prepare(target, args.threads)
            for workload in WORKLOADS:  # unmeasured: first requests fill caches and pools
                for target in sides:
                    run_phase(target, workload, args.threads, 10**6, args.warmup)
            phases: dict[tuple[str, str], list[Phase]] = {}
            for rnd in range(args.rounds):
                for workload in WORKLOADS:
                    # Rotate who goes first every round, so drift hits every side alike.
                    shift = rnd % len(sides)
                    line = []
                    for target in sides[shift:] + sides[:shift]:
                        phase = run_phase(target, workload, args.threads, args.max_requests,
                                          args.seconds)
                        phases.setdefault((workload, target.name), []).append(phase)
                        ms = 1000 * phase.cpu_seconds / max(phase.requests, 1)
                        line.append(f"{target.name} {phase.rps:5.1f} rps {ms:4.1f} ms cpu/req"
                                    + (f" ({phase.errors} errors)" if phase.errors else ""))
                    print(f"round {rnd + 1} {workload:11s} " + ", ".join(line), flush=True)
        print(f"\n{args.threads} threads, {args.rounds} alternating rounds of <= {args.seconds:g}"
              f" s / {args.max_requests} requests; token grants: {tokens.grants}")
        ok = summary(phases, sides)
        print(f"goal: >= 0.90x on every workload; total {time.perf_counter() - began:.0f} s")
        return 0 if ok else 1
    finally:
        if keycloak is not None:
            keycloak.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
