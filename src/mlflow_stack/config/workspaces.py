"""`workspaces:` in the config: MLflow workspaces and the groups granted each, reconciled by
`apply` / `up` (permissions/workspaces.py) when `server.workspaces` is on.

A group is a Keycloak realm role, which the SSO layer sees as a group. The level is
mlflow-oidc-auth's, on everything in the workspace nobody granted otherwise: READ reads (and
lets members search the workspace at all), USE uses, EDIT writes, MANAGE also deletes, creates
experiments, models and prompts in the workspace (by header) and manages grants.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlflow_stack.config.permissions import Level

DEFAULT_WORKSPACE = "default"
# MLflow's WorkspaceNameValidator (mlflow/store/workspace/abstract_store.py): a DNS label.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class WorkspaceSpec(BaseModel):
    """One workspace: created in MLflow if missing, its description kept, and exactly these
    groups granted on it (other groups' grants on it are removed; users' grants and grants
    made by oidc-auth's workspace rules are left alone)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=2, max_length=63)
    description: str | None = Field(None, max_length=1000)
    groups: dict[str, Level] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"workspace name {value!r}: lowercase letters, digits and '-', "
                             "starting and ending with a letter or digit (MLflow's rule)")
        return value

    @field_validator("groups")
    @classmethod
    def _group_names(cls, value: dict[str, Level]) -> dict[str, Level]:
        for group in value:
            if not group or len(group) > 255:
                raise ValueError(f"group name {group!r}: 1 to 255 characters")
        return value


def check_workspaces(workspaces: list[WorkspaceSpec], *, enabled: bool, sso: bool) -> None:
    """Cross-checks with the rest of the config (called by Settings)."""
    if not workspaces:
        return
    if not enabled:
        raise ValueError("workspaces are declared but server.workspaces is false: turn it on "
                         "(MLflow then runs with --enable-workspaces)")
    if not sso:
        raise ValueError("workspaces need single sign-on (auth.provider: keycloak) to grant "
                         "groups access")
    seen: set[str] = set()
    for ws in workspaces:
        if ws.name in seen:
            raise ValueError(f"workspace {ws.name!r} is declared twice; keep one")
        seen.add(ws.name)
