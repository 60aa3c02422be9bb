"""Workers that share memory: start-up, resting and warm memory, and keep-alive latency.

Starts a real PostgreSQL and Keycloak (the test harness) and brings the SSO platform up on them
(``mlflow-stack up``'s own code path) with 1 and with 4 workers, under two runners:

- ``forked``: what the platform runs, gunicorn importing the app once and forking uvicorn h11
  workers (server/gunicorn_conf.py), started by ``mlflow-stack-server`` which the server
  replaces (server/serve.py);
- ``spawned``: the runner it replaced, rebuilt here: ``mlflow server --uvicorn-opts "--http h11"``,
  where uvicorn spawns fresh interpreters that each import everything, under the waiting
  ``mlflow server`` process.

Rounds alternate the four contenders (these machines are noisy: compare only within a run).
For each start: seconds from ``up`` to healthy; USS and RSS summed over the server's process
tree at rest and after every worker has served real requests (sign-in with a bearer token,
runs, metrics, an artifact upload and download); and the median time of a small call on a
kept-alive connection against a fresh connection each time (a reused connection used to wait
~40 ms for the client's delayed ACK when the workers' shared socket left Nagle on).

    .venv/bin/python bench/workers.py [--rounds 2] [--calls 60]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
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
from mlflow_stack.launch.spec import ServerLaunch
from mlflow_stack.local import platform
from mlflow_stack.local.state import StateDir
from mlflow_stack.progress import NullProgress

API = "/api/2.0/mlflow"
MIB = 2**20


@dataclass
class Sample:
    start_s: float
    rest_uss: float
    rest_rss: float
    warm_uss: float
    warm_rss: float
    warm_pss: float
    reused_ms: float
    fresh_ms: float
    processes: int


def tree_memory(pid: int) -> tuple[float, float, float, int]:
    """(USS, RSS, PSS, processes) summed over the process and its descendants. PSS counts each
    shared page once in all, which is what the memory limit of a pod (its cgroup) charges."""
    root = psutil.Process(pid)
    uss = rss = pss = 0.0
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            uss += info.uss
            rss += info.rss
            pss += info.pss
    return uss, rss, pss, len(procs)


def spawned(launch: ServerLaunch) -> ServerLaunch:
    """The previous runner's command line: `mlflow server` with uvicorn spawning workers."""
    argv = list(launch.argv)
    at = argv.index("server")
    opts = argv.index("--gunicorn-opts")
    argv[opts:opts + 2] = ["--uvicorn-opts", "--http h11"]
    return replace(launch, argv=[sys.executable, "-m", "mlflow", *argv[at:]])


@contextlib.contextmanager
def runner(kind: str) -> Iterator[None]:
    """`platform.server_launch` as the platform has it, or rewritten to the old runner."""
    original = platform.server_launch
    if kind == "spawned":
        def patched(settings: Settings, state: StateDir) -> ServerLaunch:
            return spawned(original(settings, state))
        platform.server_launch = patched
    try:
        yield
    finally:
        platform.server_launch = original


def settings_for(pg: PostgresServer, port: int, realm: SsoRealm, workers: int) -> Settings:
    data: dict[str, Any] = {
        "server": {"port": port, "workers": workers},
        "database": {"backend": "postgresql", "host": pg.host, "port": pg.port,
                     "user": pg.superuser, "name": "mlflow_workers",
                     "auth_name": "mlflow_workers_auth"},
        "auth": {"provider": "keycloak", "keycloak_url": realm.server.url,
                 "realm": realm.realm, "client_id": realm.client_id},
    }
    settings = Settings.model_validate(data)
    return settings.model_copy(update={"secrets": Secrets.model_construct(
        db_password=SecretStr(pg.password),
        oidc_client_secret=SecretStr(realm.client_secret))})


def small_call_ms(url: str, headers: dict[str, str], calls: int, reuse: bool) -> float:
    """Median milliseconds of a small authenticated call."""
    times = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as shared:
        shared.get("/health")
        for _ in range(calls):
            client = shared if reuse else httpx.Client(base_url=url, headers=headers, timeout=30)
            started = time.perf_counter()
            response = client.post(f"{API}/experiments/search", json={"max_results": 1})
            times.append(time.perf_counter() - started)
            if not reuse:
                client.close()
            response.raise_for_status()
    return 1000 * statistics.median(times)


def ok(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: "
                           f"{response.status_code} {response.text[:300]}")
    return response


def warm_up(url: str, headers: dict[str, str], workers: int, root: Path) -> None:
    """Enough real requests, on fresh connections, that every worker serves each kind."""
    payload = root / "model.bin"
    payload.write_bytes(b"x" * (256 * 1024))
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        exp = ok(client.post(f"{API}/experiments/create",
                             json={"name": f"workers-{uuid.uuid4().hex[:8]}"}))
        exp_id = exp.json()["experiment_id"]
    for _ in range(6 * workers):
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            run = ok(client.post(f"{API}/runs/create", json={"experiment_id": exp_id}))
            run_id = run.json()["run"]["info"]["run_id"]
            ok(client.post(f"{API}/runs/log-batch", json={
                "run_id": run_id, "params": [{"key": "p", "value": "1"}],
                "metrics": [{"key": "m", "value": 1.0, "timestamp": 0, "step": 0}],
            }))
            ok(client.post(f"{API}/runs/search", json={"experiment_ids": [exp_id]}))
            path = f"/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{run_id}/artifacts/m.bin"
            ok(client.put(path, content=payload.read_bytes()))
            ok(client.get(path))


def measure(settings: Settings, state: StateDir, headers: Callable[[], dict[str, str]],
            calls: int, root: Path) -> Sample:
    began = time.perf_counter()
    result = platform.up(settings, state, NullProgress())
    start_s = time.perf_counter() - began
    try:
        url, pid = result.record.url, result.record.pid
        time.sleep(3)  # settle: imports and first-request caches of start-up are done
        rest_uss, rest_rss, _, procs = tree_memory(pid)
        reused = small_call_ms(url, headers(), calls, reuse=True)
        fresh = small_call_ms(url, headers(), calls, reuse=False)
        try:
            warm_up(url, headers(), settings.effective_workers, root)
        except RuntimeError:
            log = state.log_file.read_text(errors="replace").splitlines()
            print("\n".join(line for line in log[-400:] if "WARNING" in line or "ERROR" in line
                            or "Traceback" in line or "Error" in line))
            raise
        warm_uss, warm_rss, warm_pss, _ = tree_memory(pid)
        return Sample(start_s, rest_uss, rest_rss, warm_uss, warm_rss, warm_pss, reused, fresh,
                      procs)
    finally:
        platform.down(state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=60, help="small calls per latency sample")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="workers-bench-"))
    keycloak: KeycloakServer | None = None
    pg: PostgresServer | None = None
    try:
        print("starting PostgreSQL and Keycloak ...", flush=True)
        pg = start_postgres(root / "pg")
        keycloak = start_keycloak(root / "kc", ensure_keycloak_dist(default_cache_dir()))
        port = free_port()
        realm = provision_realm(keycloak, f"workers-{uuid.uuid4().hex[:6]}",
                                f"http://127.0.0.1:{port}", users={"bench": [USER_ROLE]})
        user = realm.users["bench"]

        def headers() -> dict[str, str]:
            token = password_grant(keycloak, realm.realm, realm.client_id, user.username,
                                   user.password, realm.client_secret)["access_token"]
            return {"Authorization": f"Bearer {token}"}

        state = StateDir(root / "state")
        # Schema and SSO tables once, so every measured start is a restart.
        platform.up(settings_for(pg, port, realm, 1), state, NullProgress())
        platform.down(state)
        contenders = [(kind, n) for kind in ("forked", "spawned") for n in (1, 4)]
        samples: dict[tuple[str, int], list[Sample]] = {c: [] for c in contenders}
        for rnd in range(args.rounds):
            shift = rnd % len(contenders)
            for kind, n in contenders[shift:] + contenders[:shift]:
                with runner(kind):
                    s = measure(settings_for(pg, port, realm, n), state, headers, args.calls,
                                root)
                samples[(kind, n)].append(s)
                print(f"round {rnd + 1} {kind:7s} {n} worker(s): up {s.start_s:5.1f} s, "
                      f"{s.processes} processes, USS rest {s.rest_uss / MIB:4.0f} MiB "
                      f"warm {s.warm_uss / MIB:4.0f} MiB (PSS {s.warm_pss / MIB:4.0f}), "
                      f"small call reused {s.reused_ms:5.1f} ms fresh {s.fresh_ms:5.1f} ms",
                      flush=True)

        def med(kind: str, n: int, field: str) -> float:
            return float(statistics.median(getattr(s, field) for s in samples[(kind, n)]))

        print(f"\nmedians of {args.rounds} alternating rounds, SSO on, PostgreSQL:")
        print(f"{'runner':8s} {'workers':>7s} {'up s':>6s} {'USS rest':>9s} {'USS warm':>9s} "
              f"{'PSS warm':>9s} {'reused ms':>9s} {'fresh ms':>9s}")
        for kind, n in contenders:
            print(f"{kind:8s} {n:7d} {med(kind, n, 'start_s'):6.1f} "
                  f"{med(kind, n, 'rest_uss') / MIB:8.0f}M {med(kind, n, 'warm_uss') / MIB:8.0f}M "
                  f"{med(kind, n, 'warm_pss') / MIB:8.0f}M "
                  f"{med(kind, n, 'reused_ms'):9.1f} {med(kind, n, 'fresh_ms'):9.1f}")
        print("\nratios (same run):")
        print(f"  forked 4 workers start / forked 1 worker start: "
              f"{med('forked', 4, 'start_s') / med('forked', 1, 'start_s'):.2f}x (goal <= 1.10x)")
        print(f"  forked 4 workers start / spawned 4 workers start: "
              f"{med('forked', 4, 'start_s') / med('spawned', 4, 'start_s'):.2f}x")
        print(f"  USS at rest, 4 workers, forked / spawned: "
              f"{med('forked', 4, 'rest_uss') / med('spawned', 4, 'rest_uss'):.2f}x "
              f"(forked {med('forked', 4, 'rest_uss') / MIB:.0f} MiB, goal <= 512 MiB)")
        print(f"  USS warm, 4 workers, forked / spawned: "
              f"{med('forked', 4, 'warm_uss') / med('spawned', 4, 'warm_uss'):.2f}x")
        for kind in ("forked", "spawned"):
            print(f"  {kind} 4 workers, small call on a reused / a fresh connection: "
                  f"{med(kind, 4, 'reused_ms') / med(kind, 4, 'fresh_ms'):.2f}x")
        return 0
    finally:
        if keycloak is not None:
            keycloak.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
