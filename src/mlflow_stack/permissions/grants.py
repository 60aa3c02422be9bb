"""One grant, normalised so the config's and the database's can be compared, and the diff.

Pure: no I/O. `diff` is what `plan` shows and `apply` runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mlflow_stack.config.permissions import GrantSpec, PermissionsSettings

SubjectKind = Literal["group", "user"]
Resource = Literal["experiment", "registered_model", "prompt"]
Key = tuple[SubjectKind, str, Resource, bool, str]


@dataclass(frozen=True)
class Grant:
    subject_kind: SubjectKind
    subject: str
    resource: Resource
    pattern: bool  # `name` is a regular expression over names
    name: str
    permission: str
    priority: int = 0  # among patterns; 0 for an exact name

    @property
    def key(self) -> Key:
        return self.subject_kind, self.subject, self.resource, self.pattern, self.name

    @property
    def resource_key(self) -> str:
        """The config key: "experiment" or "experiment_pattern"."""
        return f"{self.resource}_pattern" if self.pattern else self.resource

    @property
    def level(self) -> str:
        return f"{self.permission} (priority {self.priority})" if self.pattern else self.permission

    def describe(self) -> str:
        return f"{self.subject_kind} {self.subject}: {self.resource_key} {self.name!r}"

    @classmethod
    def from_spec(cls, spec: GrantSpec) -> Grant:
        kind, subject = spec.subject
        key, name = spec.resource
        pattern = key.endswith("_pattern")
        resource: Resource = key.removesuffix("_pattern")  # type: ignore[assignment]
        return cls(kind, subject, resource, pattern, name, spec.permission,
                   spec.priority or 0 if pattern else 0)

    def to_spec(self) -> dict[str, object]:
        """The config's mapping for this grant (what `permissions export` writes)."""
        spec: dict[str, object] = {self.subject_kind: self.subject,
                                   self.resource_key: self.name,
                                   "permission": self.permission}
        if self.pattern and self.priority:
            spec["priority"] = self.priority
        return spec


def desired(settings: PermissionsSettings) -> list[Grant]:
    return [Grant.from_spec(spec) for spec in settings.grants]


@dataclass(frozen=True)
class GrantChange:
    action: Literal["create", "update", "delete"]
    grant: Grant  # the desired grant (create, update) or the live one (delete)
    before: Grant | None = None  # the live grant an update replaces

    @property
    def detail(self) -> str:
        if self.action == "create":
            return self.grant.level
        if self.action == "update":
            assert self.before is not None
            return f"{self.before.level} -> {self.grant.level} (changed outside the config)"
        return f"{self.grant.level}: not in the config"


def in_scope(grant: Grant, settings: PermissionsSettings) -> bool:
    """Whether the config manages this live grant: every one with `scope: all`, else those of
    the groups and users the config names."""
    if settings.scope == "all":
        return True
    return (grant.subject_kind, grant.subject) in {s.subject for s in settings.grants}


def diff(wanted: Iterable[Grant], live: Iterable[Grant],
         settings: PermissionsSettings) -> list[GrantChange]:
    """The changes that make the live grants in scope exactly the wanted ones, in the order
    they are shown: creates and updates in the config's order, then deletions."""
    live_by_key = {g.key: g for g in live}
    wanted_keys = set()
    out: list[GrantChange] = []
    for grant in wanted:
        wanted_keys.add(grant.key)
        now = live_by_key.get(grant.key)
        if now is None:
            out.append(GrantChange("create", grant))
        elif (now.permission, now.priority) != (grant.permission, grant.priority):
            out.append(GrantChange("update", grant, before=now))
    for key, grant in sorted(live_by_key.items()):
        if key not in wanted_keys and in_scope(grant, settings):
            out.append(GrantChange("delete", grant))
    return out
