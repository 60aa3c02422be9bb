"""No-op apply: how long `mlflow-stack apply` takes when everything already matches the config.

Starts the test harness's real Keycloak, PostgreSQL, S3 gateway (JuiceFS) and kube-apiserver +
etcd on free loopback ports under a temp dir, writes one config that targets all four (SSO
realm objects, the databases, the bucket, the Kubernetes objects through the API server's admin
kubeconfig), runs `apply` until it converges (FakeControllers stand in for the job and
deployment controllers), then:

1. times N no-op `apply` runs as users run them: a subprocess of this checkout's CLI
   (`python -m mlflow_stack.cli.main apply -c ...`), with Keycloak's request count per run from
   its access log. With `--baseline REV` the same CLI of git revision REV (its `src/`, extracted
   to the temp dir) runs alternately against the same services: the ratio is the speed-up;
2. the CLI's start: `import mlflow_stack.cli.main` (`-X importtime`, summed by top-level
   package) against a bare interpreter;
3. one no-op apply in-process, split by phase (resolve, each system's connect / observe / plan /
   run, the upgrade guard's image check) with the HTTP requests each phase made per service,
   and the functions cProfile finds most expensive.

These machines are shared and noisy: compare only figures of one run (the ratios).

    .venv/bin/python bench/noop_apply.py [--runs 5] [--baseline REV] [--top 25]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))  # this checkout's code, whatever the venv's install says

from harness.fake_controllers import FakeControllers  # noqa: E402
from harness.keycloak import (  # noqa: E402
    KeycloakServer,
    create_realm,
    create_user,
    default_cache_dir,
    ensure_keycloak_dist,
    start_keycloak,
)
from harness.kube import SECRET_VALUES  # noqa: E402
from harness.kubeapi import KubeAPIServer, start_kube_apiserver  # noqa: E402
from harness.postgres import PostgresServer, start_postgres  # noqa: E402
from harness.s3 import S3Server, start_s3  # noqa: E402

# Secrets and state the CLI could pick up from this machine: never read here.
_DROPPED_ENV = ("AWS_", "ADMIN_PASSWORD", "KEYCLOAK_", "MLFLOW_STACK_", "MLFLOW_KEYCLOAK_",
                "KUBECONFIG", "HARBOR_", "PYTHONPATH")
ADMIN_USER = "alice"


@dataclass
class Services:
    keycloak: KeycloakServer
    postgres: PostgresServer
    s3: S3Server
    kube: KubeAPIServer


@contextlib.contextmanager
def services(root: Path) -> Iterator[Services]:
    """All four started (Keycloak, the slowest, alongside the others), stopped by pid after."""
    started: list[Any] = []
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            kc = pool.submit(start_keycloak, root / "keycloak",
                             ensure_keycloak_dist(default_cache_dir()))
            try:
                pg = start_postgres(root / "postgres")
                started.append(pg)
                s3 = start_s3(root / "s3")
                started.append(s3)
                kube = start_kube_apiserver(root / "kubeapi")
                started.append(kube)
            finally:
                keycloak = kc.result()
                started.append(keycloak)
        yield Services(keycloak, pg, s3, kube)
    finally:
        for server in reversed(started):
            server.stop()


@dataclass
class Setup:
    config: Path
    state_dir: Path
    env: dict[str, str]  # the CLI's environment, secrets included (never printed)
    namespace: str


def write_setup(root: Path, s: Services) -> Setup:
    realm = f"noop-{uuid.uuid4().hex[:8]}"
    create_realm(s.keycloak, realm)
    create_user(s.keycloak, realm, ADMIN_USER, "alice-pw-1", "alice@example.test")
    ns = f"noop-{uuid.uuid4().hex[:8]}"
    suffix = ns.replace("-", "_")
    data: dict[str, Any] = {
        "server": {"public_scheme": "http"},
        "domain": "example.test",
        "auth": {"provider": "keycloak", "keycloak_url": s.keycloak.url, "realm": realm,
                 "admin_username": s.keycloak.admin_user, "realm_admin_users": [ADMIN_USER]},
        "database": {"backend": "postgresql", "host": "127.0.0.1", "port": s.postgres.port,
                     "name": f"mlflow_{suffix}", "auth_name": f"mlflow_auth_{suffix}",
                     "user": s.postgres.superuser},
        "artifacts": {"backend": "s3", "bucket": f"b-{ns}", "endpoint_url": s.s3.endpoint_url},
        "registry": {"host": "registry.example.test"},
        "kubernetes": {"namespace": ns, "kubeconfig": str(s.kube.admin_kubeconfig)},
        "discovery": {"code_server": False},
    }
    home = root / "home"
    home.mkdir()
    config = root / "mlflow-stack.yaml"
    config.write_text(yaml.safe_dump(data))
    base = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV)}
    env = {**base, "HOME": str(home), "COLUMNS": "200",
           "MLFLOW_STACK_HOME": str(home / "mlflow-stack"),
           "MLFLOW_STACK_ENV_FILE": str(home / "no.env"),
           "MLFLOW_KEYCLOAK_TOKEN_CACHE": str(home / "tokens.json"),
           "KEYCLOAK_ADMIN_PASSWORD": s.keycloak.admin_password,
           "ADMIN_PASSWORD": s.postgres.password,
           "AWS_ACCESS_KEY_ID": s.s3.access_key, "AWS_SECRET_ACCESS_KEY": s.s3.secret_key,
           "HARBOR_ROBOT_TOKEN": SECRET_VALUES["harbor_robot_token"]}
    return Setup(config, root / "state", env, ns)


# --------------------------------------------------------------------------------------------
# the CLI as a subprocess


@dataclass
class Cli:
    name: str
    src: Path  # put first on PYTHONPATH: the code under test

    def env(self, setup: Setup) -> dict[str, str]:
        return {**setup.env, "PYTHONPATH": str(self.src)}

    def apply(self, setup: Setup, timeout: float = 600) -> tuple[float, float, str, str]:
        """(wall s, CPU s of the CLI process, stdout, stderr) of one `apply`."""
        args = [sys.executable, "-m", "mlflow_stack.cli.main", "apply", "-c", str(setup.config),
                "--state-dir", str(setup.state_dir)]
        before = _children_cpu()
        start = time.perf_counter()
        done = subprocess.run(args, cwd=setup.config.parent, env=self.env(setup),
                              capture_output=True, text=True, timeout=timeout, check=False)
        took = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: apply exited {done.returncode}:\n{done.stderr}")
        return took, _children_cpu() - before, done.stdout, done.stderr


def _children_cpu() -> float:
    """User + system CPU s of the waited-for children so far: less disturbed by other load on
    the machine than wall time (the services' own CPU is not in it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline_cli(rev: str, root: Path) -> Cli:
    """The `src/` of revision `rev`, extracted (not checked out: the work tree stays as is)."""
    target = root / f"baseline-{rev}"
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return Cli(f"baseline {rev}", target / "src")


def converge(cli: Cli, setup: Setup, kube: KubeAPIServer) -> None:
    with FakeControllers(kube, setup.namespace):
        for _ in range(3):
            out = cli.apply(setup)[2]
            if "No changes" in out:
                return
    raise RuntimeError(f"apply did not converge:\n{out}")


def count_keycloak(server: KeycloakServer) -> int:
    """Requests Keycloak has answered so far, not counting the log-sync markers."""
    server.sync_access_log()
    return sum(1 for line in server.access_log_lines() if "access-log-marker" not in line)


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    keycloak_requests: list[int] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


_STEP = re.compile(r"^✓ (.+?) \((\d+\.\d)s\)$")


def time_noop(clis: list[Cli], setup: Setup, kc: KeycloakServer, runs: int) -> dict[str, Runs]:
    """Alternate the CLIs run by run (noise hits both alike); each run must change nothing."""
    result = {c.name: Runs() for c in clis}
    for _ in range(runs):
        for cli in clis:
            before = count_keycloak(kc)
            took, cpu, out, err = cli.apply(setup)
            if "No changes" not in out:
                raise RuntimeError(f"{cli.name}: not a no-op apply:\n{out}")
            r = result[cli.name]
            r.seconds.append(took)
            r.cpu.append(cpu)
            r.keycloak_requests.append(count_keycloak(kc) - before)
            for line in err.splitlines():
                m = _STEP.match(line.strip())
                if m:
                    r.steps[re.sub(r" (read|at) .*", r" \1", m.group(1))].append(float(m.group(2)))
    return result


def system_imports(cli: Cli, setup: Setup, repeat: int = 5) -> list[tuple[str, float]]:
    """CPU s each step adds in one fresh interpreter, in the order apply takes them: the CLI,
    then each system's module (its client library mostly), then building a boto3 S3 client.
    The least of `repeat` interpreters, step by step."""
    steps = ["import mlflow_stack.cli.main",
             *(f"import mlflow_stack.components.{name}" for name in
               ("keycloak", "postgres", "bucket", "kubernetes")),
             "mlflow_stack.components.bucket.boto3.client('s3', region_name='us-east-1', "
             "aws_access_key_id='k', aws_secret_access_key='s', endpoint_url='http://127.0.0.1:9')"]
    lines = ["import time", "last = time.process_time()"]
    for step in steps:
        lines += [step, "now = time.process_time()", "print(now - last)", "last = now"]
    best = [float("inf")] * len(steps)
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", "\n".join(lines)], env=cli.env(setup),
                             check=True, capture_output=True, text=True).stdout.split()
        best = [min(b, float(o)) for b, o in zip(best, out, strict=True)]
    names = [*steps[:-1], "build a boto3 S3 client"]
    return list(zip(names, best, strict=True))


def import_times(cli: Cli, setup: Setup, repeat: int = 3) -> tuple[float, float, Counter[str]]:
    """(bare interpreter CPU s, `import mlflow_stack.cli.main` CPU s, µs of import by top
    package), the least of `repeat` runs."""
    def cpu(code: str) -> float:
        before = _children_cpu()
        subprocess.run([sys.executable, "-c", code], env=cli.env(setup), check=True,
                       capture_output=True)
        return _children_cpu() - before

    bare = min(cpu("pass") for _ in range(repeat))
    cli_import = min(cpu("import mlflow_stack.cli.main") for _ in range(repeat))
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c",
                            "import mlflow_stack.cli.main"], env=cli.env(setup), check=True,
                           capture_output=True, text=True).stderr
    by_package: Counter[str] = Counter()
    for line in trace.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and parts[0][12:].strip()\
                .isdigit():
            by_package[parts[2].strip().split(".")[0]] += int(parts[0][12:].strip())
    return bare, cli_import, by_package


# --------------------------------------------------------------------------------------------
# in-process: phases and requests


class Phases:
    """Wall time per phase and HTTP requests per (phase, service). Phases nest per thread; a
    request counts for the innermost phase of the thread that made it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.requests: Counter[tuple[str, str]] = Counter()
        self._local = threading.local()
        self._lock = threading.Lock()

    def _stack(self) -> list[str]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        stack: list[str] = self._local.stack
        return stack

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        stack = self._stack()
        stack.append(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            stack.pop()
            with self._lock:
                self.seconds[name] += took

    def request(self, service: str) -> None:
        stack = self._stack()
        # A pool thread a phase started has no phase of its own: name it by its pool.
        where = stack[-1] if stack else \
            f"(threads {threading.current_thread().name.rsplit('_', 1)[0]})"
        with self._lock:
            self.requests[(where, service)] += 1


@contextlib.contextmanager
def patched(obj: Any, attr: str, wrap: Callable[[Any], Any]) -> Iterator[None]:
    original = getattr(obj, attr)
    setattr(obj, attr, wrap(original))
    try:
        yield
    finally:
        setattr(obj, attr, original)


def timing(phases: Phases, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with phases.phase(name):
                return fn(*args, **kwargs)
        return timed
    return wrap


def counting(phases: Phases, service: Callable[[Any], str]
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            phases.request(service(request))
            return fn(self, request, *args, **kwargs)
        return send
    return wrap


class _SystemTimer:
    """A System whose moves are timed as `<name>.connect` etc."""

    def __init__(self, system: Any, phases: Phases) -> None:
        self._system, self._phases = system, phases

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._system, attr)
        if attr in ("connect", "observe", "plan"):
            return timing(self._phases, f"{self._system.name}.{attr}")(value)
        return value


@contextlib.contextmanager
def instrumented(phases: Phases, port_names: dict[int, str]) -> Iterator[None]:
    import importlib

    import httpx2
    import requests

    from mlflow_stack import deploy
    from mlflow_stack.components.registry import SYSTEMS
    from mlflow_stack.ops import upgrade

    def service(request: Any) -> str:
        match = re.search(r"//[^/:]+:(\d+)", str(request.url))
        return port_names.get(int(match.group(1)), "other") if match else "other"

    with contextlib.ExitStack() as stack:
        for entry in SYSTEMS:
            module = importlib.import_module(entry.module)
            stack.enter_context(patched(module, "SYSTEM",
                                        lambda s: _SystemTimer(s, phases)))
        stack.enter_context(patched(deploy, "resolve_for", timing(phases, "resolve")))
        stack.enter_context(patched(upgrade, "image_change",
                                    timing(phases, "upgrade guard (live image)")))

        def run_steps(fn: Callable[..., Any]) -> Callable[..., Any]:
            def timed(system: str, *args: Any, **kwargs: Any) -> Any:
                with phases.phase(f"{system}.run"):
                    return fn(system, *args, **kwargs)
            return timed
        stack.enter_context(patched(deploy, "run_steps", run_steps))
        stack.enter_context(patched(requests.Session, "send", counting(phases, service)))
        stack.enter_context(patched(httpx2.Client, "send", counting(phases, service)))
        yield


def in_process_apply(setup: Setup) -> list[Any]:
    """The CLI's apply (cli/deploy_cmd.py), minus printing: the guarded apply resolves the
    settings, checks the secrets, reads every system, then writes."""
    from mlflow_stack.cli.local_cmd import state_dir_for
    from mlflow_stack.config.loader import check_secrets, load_config
    from mlflow_stack.ops import upgrade
    from mlflow_stack.progress import NullProgress

    loaded = load_config(setup.config, require_secrets=False)
    results, _ = upgrade.apply_guarded(
        loaded.settings, state_dir_for(setup.state_dir), NullProgress(),
        check=lambda settings: check_secrets(settings, loaded.source))
    return results


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --------------------------------------------------------------------------------------------
# report


def _stats(values: list[float]) -> str:
    return (f"median {statistics.median(values):5.2f} s  min {min(values):5.2f} s  "
            f"max {max(values):5.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="no-op applies per CLI")
    parser.add_argument("--baseline", help="git revision to compare with, run alternately")
    parser.add_argument("--top", type=int, default=25, help="cProfile rows to print")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="noop-apply-"))
    try:
        clis = [Cli("this checkout", REPO / "src")]
        if args.baseline:
            clis.append(baseline_cli(args.baseline, root))
        t0 = time.perf_counter()
        with services(root) as s:
            print(f"services up in {time.perf_counter() - t0:.0f} s (Keycloak "
                  f"{s.keycloak.start_seconds:.0f} s)", flush=True)
            setup = write_setup(root, s)
            t0 = time.perf_counter()
            converge(clis[0], setup, s.kube)
            print(f"converged in {time.perf_counter() - t0:.1f} s", flush=True)
            for cli in clis[1:]:
                cli.apply(setup)  # the baseline too must see nothing to do (and warm its pyc)

            print(f"\n== no-op `mlflow-stack apply` as a subprocess, {args.runs} runs each ==")
            timed = time_noop(clis, setup, s.keycloak, args.runs)
            for cli in clis:
                r = timed[cli.name]
                print(f"{cli.name:>22}: wall {_stats(r.seconds)}\n{'':>24}CPU  "
                      f"{_stats(r.cpu)}   Keycloak requests/run "
                      f"{statistics.median(r.keycloak_requests):.0f}")
                for step, values in r.steps.items():
                    print(f"{'':>24}{step:<28} median {statistics.median(values):4.1f} s")
            if len(clis) > 1:
                for what in ("seconds", "cpu"):
                    new, old = (statistics.median(getattr(timed[c.name], what))
                                for c in clis[:2])
                    print(f"{'ratio':>22}: {'wall' if what == 'seconds' else 'CPU '} this "
                          f"checkout / {clis[1].name} = {new / old:.2f}x ({old:.2f} s -> "
                          f"{new:.2f} s, medians of runs alternated in this run)")

            print("\n== CLI start ==")
            for cli in clis:
                bare, cli_import, packages = import_times(cli, setup)
                top = ", ".join(f"{name} {us / 1e6:.2f}" for name, us in packages.most_common(8))
                print(f"{cli.name:>22}: CPU of python alone {bare:.2f} s; of import "
                      f"mlflow_stack.cli.main {cli_import:.2f} s\n{'':>24}import s "
                      f"by package (self time, -X importtime): {top}")

            print(f"\n== CPU of a fresh interpreter's imports, step by step ({clis[0].name}) ==")
            for what, seconds in system_imports(clis[0], setup):
                print(f"  {what:<58} {seconds:5.2f} s")

            print("\n== one no-op apply in-process (this checkout), by phase ==")
            ports = {s.keycloak.port: "keycloak", s.postgres.port: "postgres",
                     int(s.s3.endpoint_url.rsplit(":", 1)[1]): "s3",
                     int(s.kube.url.rsplit(":", 1)[1]): "kube-apiserver"}
            with environment({k: v for k, v in clis[0].env(setup).items()
                              if k != "PYTHONPATH"}):
                in_process_apply(setup)  # imports and first connections out of the figures
                phases = Phases()
                with instrumented(phases, ports):
                    start = time.perf_counter()
                    in_process_apply(setup)
                    total = time.perf_counter() - start
                profile = cProfile.Profile()
                profile.enable()
                in_process_apply(setup)
                profile.disable()
            print(f"{'whole apply':<34} {total:6.2f} s (phases below may overlap when they run "
                  "concurrently; `resolve` includes the Keycloak login it makes)")
            requests_by_phase: dict[str, list[str]] = defaultdict(list)
            for (phase, service), n in sorted(phases.requests.items()):
                requests_by_phase[phase].append(f"{service} {n}")
            for phase, seconds in sorted(phases.seconds.items(), key=lambda kv: -kv[1]):
                made = ", ".join(requests_by_phase.pop(phase, [])) or "-"
                print(f"  {phase:<32} {seconds:6.2f} s  {seconds / total:4.0%}  requests: {made}")
            for phase, rest in requests_by_phase.items():
                print(f"  {phase:<32} requests: {', '.join(rest)}")
            print(f"\n== cProfile of one in-process no-op apply, top {args.top} by cumulative ==")
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(args.top)
            print("\n".join(line for line in text.getvalue().splitlines()[6:] if line.strip()))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
