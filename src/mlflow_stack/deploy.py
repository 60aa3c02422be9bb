"""`plan` and `apply` across the external systems, in dependency order.

Every system is walked the same way (components.protocol: connect, observe, plan of steps,
teardown), in the registry's order (components.registry: keycloak -> postgres -> bucket ->
kubernetes, which includes discovery). The settings are resolved once first (resolve.py). The
CLI only prints what plan()/apply()/uninstall() return.

apply() first plans every enabled system (reads only: logins, realms, users, buckets are
checked), so a wrong password or an unreachable service in a later system stops the run before
anything is written to an earlier one. The systems are independent to read, so their reads run
concurrently, one thread each; progress still reports them one line each in the registry's
order, and an error is the first one in that order. The writes then run one system after the
other, in that order. Each system is connected once per run: the Keycloak login that resolves
the OIDC client secret is the one the keycloak system reads and writes with.

Which systems run (`target`):
- "auto" (default): every external system the config enables, and Kubernetes when the config
  names a cluster (kubernetes.kubeconfig or kubernetes.context; the reference inventory's
  `kubeconfig` sets the first).
- "kubernetes": the same, plus Kubernetes with the default kubeconfig ($KUBECONFIG,
  ~/.kube/config or the in-cluster service account).
- "services": Keycloak, PostgreSQL and the bucket only, never Kubernetes.
uninstall() runs the enabled systems in reverse order and keeps data unless `purge`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mlflow_stack.components.base import Change
from mlflow_stack.components.protocol import (
    Absent,
    Step,
    System,
    changes,
    refuse_blocked,
    run_steps,
)
from mlflow_stack.components.registry import SYSTEMS, Entry
from mlflow_stack.config.model import Settings
from mlflow_stack.progress import NullProgress, Progress
from mlflow_stack.resolve import ClientSecret, Connect, resolve


@dataclass
class SystemResult:
    system: str
    where: str
    changes: list[Change] = field(default_factory=list)
    skipped: str | None = None  # why the system did not run

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.is_change]


Target = Literal["auto", "kubernetes", "services"]


def entries_for(target: Target = "auto",
                entries: Sequence[Entry] | None = None) -> list[Entry]:
    """The systems for a target (see the module docstring)."""
    chosen = list(SYSTEMS if entries is None else entries)
    if target == "auto":
        return chosen
    if target == "services":
        return [e for e in chosen if e.name != "kubernetes"]
    return [replace(e, skip_reason=lambda s: None) if e.name == "kubernetes" else e
            for e in chosen]


def local_entries(settings: Settings) -> list[Entry]:
    """The systems `up` provisions for this config (the database and the bucket)."""
    return [e for e in SYSTEMS if e.local and e.skip_reason(settings) is None]


def includes_kubernetes(settings: Settings, target: Target = "auto") -> bool:
    return any(e.name == "kubernetes" and e.skip_reason(settings) is None
               for e in entries_for(target))


def resolve_for(settings: Settings, target: Target = "auto", *,
                client_secret: ClientSecret = "create", connect: Connect | None = None
                ) -> Settings:
    """The settings every system of this target works from (resolve.resolve)."""
    return resolve(settings, cluster=includes_kubernetes(settings, target),
                   client_secret=client_secret, connect=connect)


def _close(client: Any) -> None:
    close: Callable[[], None] | None = getattr(client, "close", None)
    if callable(close):
        close()


@contextlib.contextmanager
def connected(system: System, settings: Settings) -> Iterator[Any]:
    """The system's client, closed afterwards when it can be (database connections)."""
    client = system.connect(settings)
    try:
        yield client
    finally:
        _close(client)


class Clients:
    """Each system's client for one plan or apply, connected on first use and closed with
    `stack`: resolving the OIDC client secret logs in to Keycloak, and the keycloak system
    then reads and writes with that session instead of logging in again.

    What connect uses (URLs, admin logins, the kubeconfig) is the same before and after
    resolution, which only adds secrets the systems write (the OIDC client secret, S3 keys)."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()  # reads connect from their own threads

    def connect(self, system: System, settings: Settings) -> Any:
        with self._lock:
            if system.name in self._open:
                return self._open[system.name]
        # Not under the lock: systems connect concurrently (one thread each, so never twice).
        client = system.connect(settings)
        with self._lock:
            self._open[system.name] = client
            self._stack.callback(_close, client)
        return client


@dataclass
class _Planned:
    system: System
    where: str
    steps: list[Step]
    notes: list[str]

    def run(self, progress: Progress) -> list[Change]:
        for note in self.notes:
            progress.detail(note)
        return run_steps(self.system.name, self.steps, progress)


def _read(system: System, settings: Settings, clients: Clients) -> _Planned:
    """Connect (once per run), observe and plan one system. Reads only."""
    client = clients.connect(system, settings)
    observed = system.observe(client, settings)
    steps = system.plan(client, settings, observed)
    return _Planned(system, system.where(settings), steps,
                    list(getattr(observed, "notes", ())))


def _plan_one(system: System, settings: Settings, stack: contextlib.ExitStack,
              progress: Progress) -> _Planned:
    """Observe and plan one system; its client stays open (on `stack`) for the steps."""
    with progress.step(f"{system.name}: read {system.where(settings)}"):
        return _read(system, settings, Clients(stack))


def _plan_all(entries: Sequence[Entry], settings: Settings, clients: Clients,
              progress: Progress) -> dict[str, _Planned]:
    """Observe and plan every system concurrently (their reads are independent); report them
    in `entries`' order, each step ending when that system's read has, and raise the first
    failure in that order. Each client stays open (on the run's stack) for the steps."""
    # Each module is imported here, one after the other: imports made by several threads at
    # once can deadlock on circular imports.
    systems = [entry.system for entry in entries]
    planned: dict[str, _Planned] = {}
    with ThreadPoolExecutor(max_workers=max(len(systems), 1),
                            thread_name_prefix="mlflow-stack-read") as pool:
        futures: list[Future[_Planned]] = [pool.submit(_read, system, settings, clients)
                                           for system in systems]
        try:
            for system, future in zip(systems, futures, strict=True):
                with progress.step(f"{system.name}: read {system.where(settings)}"):
                    planned[system.name] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()  # reads not started yet; the running ones end on their own
            raise
    return planned


def _read_all(settings: Settings, chosen: Sequence[Entry], target: Target,
              check: Callable[[Settings], None] | None, stack: contextlib.ExitStack,
              progress: Progress) -> tuple[Settings, Clients, dict[str, _Planned]]:
    """What plan and apply read first: the settings resolved with the run's clients (open on
    `stack`), `check`ed, then every system this config uses planned (`_plan_all`)."""
    clients = Clients(stack)
    settings = resolve_for(settings, target, connect=clients.connect)
    if check is not None:
        check(settings)
    planned = _plan_all([e for e in chosen if e.skip_reason(settings) is None], settings,
                        clients, progress)
    return settings, clients, planned


def plan(settings: Settings, progress: Progress | None = None,
         entries: Sequence[Entry] | None = None,
         target: Target = "auto",
         check: Callable[[Settings], None] | None = None) -> list[SystemResult]:
    """What apply would change in each system, in apply's order. Reads only.

    `check` gets the resolved settings before any system is read (the CLI's check that every
    secret is known)."""
    progress = progress or NullProgress()
    chosen = entries_for(target, entries)
    with contextlib.ExitStack() as stack:
        settings, _, planned = _read_all(settings, chosen, target, check, stack, progress)
    results: list[SystemResult] = []
    for entry in chosen:
        reason = entry.skip_reason(settings)
        if reason is not None:
            results.append(SystemResult(entry.name, "", skipped=reason))
            continue
        p = planned[entry.name]
        results.append(SystemResult(entry.name, p.where, changes(p.steps)))
    return results


def apply(settings: Settings, progress: Progress | None = None,
          entries: Sequence[Entry] | None = None,
          target: Target = "auto",
          before_writes: Callable[[Settings, Progress, Clients], None] | None = None,
          check: Callable[[Settings], None] | None = None,
          ) -> list[SystemResult]:
    """Make every enabled system match the config, in dependency order. Idempotent.

    Every system is observed once and planned before the first write, so a refusal anywhere (a
    wrong password, an unreachable service, a Secret whose values are unknown) changes nothing.
    `before_writes` runs after those checks and before the first write (the upgrade backup),
    with the run's clients.
    No system's plan depends on another's writes: what they share (the OIDC client secret, the
    S3 keys) is resolved before any of them is observed. `check` gets the resolved settings
    before any system is read (the CLI's check that every secret is known).
    """
    progress = progress or NullProgress()
    chosen = entries_for(target, entries)
    results: list[SystemResult] = []
    with contextlib.ExitStack() as stack:
        settings, clients, planned = _read_all(settings, chosen, target, check, stack,
                                               progress)
        for p in planned.values():
            refuse_blocked(p.steps)
        if before_writes is not None:
            before_writes(settings, progress, clients)
        for entry in chosen:
            reason = entry.skip_reason(settings)
            if reason is not None:
                results.append(SystemResult(entry.name, "", skipped=reason))
                continue
            p = planned[entry.name]
            results.append(SystemResult(entry.name, p.where, p.run(progress)))
    return results


def uninstall(settings: Settings, *, purge: bool = False, progress: Progress | None = None,
              target: Target = "auto", dry_run: bool = False) -> list[SystemResult]:
    """Undo apply, in reverse order: the Kubernetes objects first (so nothing uses the data
    any more), then the bucket, the databases and the Keycloak client.

    Without `purge` the data stays: PVCs, the namespace, the databases, the bucket and the
    Keycloak client and roles are reported as kept. With it they are deleted too (the
    reference's rollback drops the database and bucket unconditionally; this does not).
    `dry_run`: the same report, nothing run.
    """
    progress = progress or NullProgress()
    # The S3 keys only to delete the bucket; no client secret: nothing here uses it.
    settings = resolve(settings, cluster=purge and includes_kubernetes(settings, target),
                       client_secret="skip")
    results: list[SystemResult] = []
    for entry in reversed(entries_for(target)):
        reason = entry.skip_reason(settings)
        if reason is not None:
            results.append(SystemResult(entry.name, "", skipped=reason))
            continue
        system = entry.system
        done = teardown_system(system, settings, purge=purge, dry_run=dry_run,
                               progress=progress)
        where = system.where(settings)
        results.append(SystemResult(entry.name, where, done))
    return results


def plan_system(system: System, settings: Settings) -> list[Change]:
    """One system's plan (tests and `doctor`); the settings must be resolved already."""
    with connected(system, settings) as client:
        return changes(system.plan(client, settings, system.observe(client, settings)))


def apply_system(system: System, settings: Settings,
                 progress: Progress | None = None) -> list[Change]:
    """One system's apply (`up`'s local systems, tests); the settings must be resolved."""
    progress = progress or NullProgress()
    with contextlib.ExitStack() as stack:
        return _plan_one(system, settings, stack, progress).run(progress)


def teardown_system(system: System, settings: Settings, *, purge: bool = False,
                    dry_run: bool = False, progress: Progress | None = None) -> list[Change]:
    """One system's uninstall (`dry_run`: the report, nothing run). A place that does not
    exist (a realm) has nothing to remove."""
    try:
        with connected(system, settings) as client:
            steps = system.teardown(client, settings, purge=purge)
            return changes(steps) if dry_run else run_steps(system.name, steps,
                                                             progress or NullProgress())
    except Absent as absent:
        return [Change(system.name, "unchanged", absent.target,
                       "does not exist; nothing to remove")]
