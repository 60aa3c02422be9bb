"""The one shape every external system has (Keycloak, PostgreSQL, the bucket, Kubernetes).

A system is a module-level object implementing `System`. Every command walks the same
registry (`components.registry.SYSTEMS`) through the same five moves:

    client = system.connect(settings)               # the only place a client is built
    observed = system.observe(client, settings)     # every read, once
    steps = system.plan(client, settings, observed) # typed steps; no I/O outside `run`
    run_steps(steps, progress)                      # apply: run the pending ones, in order
    system.teardown(client, settings, purge=...)    # uninstall: steps again, deletions marked
    system.check(settings)                          # doctor: findings, never an exception

`plan` takes what `observe` returned and builds the steps from it without reading anything
more, so its diff logic is unit-tested with a fabricated observation; `run` closures are the
only code that writes, and they use the client they were given.

`settings` is always the resolved config (`mlflow_stack.resolve`): every secret the run needs
is already in it, whichever system it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mlflow_stack.components.base import Change
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError
from mlflow_stack.progress import Progress

Status = Literal["ok", "problem", "skipped"]


@dataclass(frozen=True)
class Step:
    """One thing a plan does: what (`change.action`, `change.target`), why (`change.detail`),
    whether it destroys something, and the code that does it."""

    change: Change
    # None: nothing to do here (unchanged, or done by an earlier step).
    run: Callable[[Progress], None] | None = None
    destructive: bool = False  # deletes data or an object, or replaces one
    # Waits for what the step started to settle (a Job to complete, a rollout). Runs after
    # `run`, and even when there was nothing to run: an interrupted apply may have left it.
    settle: Callable[[Progress], None] | None = None
    # Why the step cannot run (a hint for the user): apply refuses before anything is written.
    blocked: str | None = None

    @property
    def pending(self) -> bool:
        return self.change.is_change


@dataclass(frozen=True)
class Finding:
    """What `doctor` found about one thing, and the fix to try when it is a problem."""

    check: str
    status: Status
    finding: str
    fix: str = ""


class Absent(Exception):
    """Raised by `connect` when the place the system works in does not exist (a realm):
    uninstall then has nothing to remove there; plan and apply report it as an error."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


class System(Protocol):
    """An external system the platform provisions; a stateless object named SYSTEM in its
    module. When a config uses it, and whether `up` provisions it, is its registry line."""

    @property
    def name(self) -> str:
        """"keycloak", "postgres", "bucket", "kubernetes": also Change.system."""

    def where(self, settings: Settings) -> str:
        """Where it works, for headings: 'realm r at https://...', 'db:5432'."""

    def connect(self, settings: Settings) -> Any:
        """The client every other method receives (checks the credentials). May raise
        Absent."""

    def observe(self, client: Any, settings: Settings) -> Any:
        """Everything `plan` needs to know about the live system. Reads only. The result may
        carry `notes` (a list of str: facts to tell the user, e.g. a key that was created),
        which the walkers show as progress details."""

    def plan(self, client: Any, settings: Settings, observed: Any) -> list[Step]:
        """The steps that make the system match the config, in the order they must run."""

    def teardown(self, client: Any, settings: Settings, *, purge: bool) -> list[Step]:
        """The steps that undo apply. Without `purge`, data is kept (reported unchanged)."""

    def check(self, settings: Settings) -> list[Finding]:
        """`doctor`'s checks of this system. Reads only; connects itself, and a refused
        connection is a finding like any other problem: never raises for one."""


def ok(check: str, finding: str) -> Finding:
    return Finding(check, "ok", finding)


def problem(check: str, finding: str, fix: str) -> Finding:
    return Finding(check, "problem", finding, fix)


def skipped(check: str, why: str) -> Finding:
    return Finding(check, "skipped", why)


def changes(steps: Sequence[Step]) -> list[Change]:
    return [s.change for s in steps]


def refuse_blocked(steps: Sequence[Step]) -> None:
    """Raise, naming every blocked step, before anything is written."""
    blocked = [s for s in steps if s.blocked is not None]
    if blocked:
        raise ConfigError("cannot " + "; ".join(
            f"{s.change.action} {s.change.target} ({s.change.detail})" for s in blocked),
            hint=blocked[0].blocked)


def run_steps(system: str, steps: Sequence[Step], progress: Progress) -> list[Change]:
    """Run the steps in order: each one with something to do as a progress step of its own,
    then its settle (which reports its own progress when it has to wait)."""
    refuse_blocked(steps)
    for step in steps:
        if step.run is not None:
            c = step.change
            with progress.step(f"{system}: {c.action} {c.target}"):
                step.run(progress)
        if step.settle is not None:
            step.settle(progress)
    return changes(steps)
