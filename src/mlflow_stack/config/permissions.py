"""`permissions:` in the config: grants kept in git, reconciled by `apply` (permissions/).

One grant gives one subject (a group, i.e. a Keycloak role the SSO layer maps to a group, or a
user by the username the SSO layer uses: the verified email) one permission level on one
resource: an experiment, a registered model or a prompt, by exact name or by a regular
expression over names (`*_pattern`, with a priority among patterns).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Level = Literal["NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE"]
# The config key of each resource kind, exact then pattern.
RESOURCE_KEYS: tuple[str, ...] = (
    "experiment", "experiment_pattern", "registered_model", "registered_model_pattern",
    "prompt", "prompt_pattern",
)


class GrantSpec(BaseModel):
    """One line of `permissions.grants`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str | None = Field(None, min_length=1, max_length=255)
    user: str | None = Field(None, min_length=1, max_length=255)
    experiment: str | None = Field(None, min_length=1, max_length=255)
    experiment_pattern: str | None = Field(None, min_length=1, max_length=255)
    registered_model: str | None = Field(None, min_length=1, max_length=255)
    registered_model_pattern: str | None = Field(None, min_length=1, max_length=255)
    prompt: str | None = Field(None, min_length=1, max_length=255)
    prompt_pattern: str | None = Field(None, min_length=1, max_length=255)
    permission: Level
    priority: int | None = Field(None, ge=0, description="Among patterns; default 0.")

    @model_validator(mode="after")
    def _one_subject_one_resource(self) -> GrantSpec:
        subjects = [k for k in ("group", "user") if getattr(self, k) is not None]
        if len(subjects) != 1:
            raise ValueError("a grant names exactly one of `group` or `user`"
                             + (f" (this one has {' and '.join(subjects)})" if subjects else ""))
        keys = [k for k in RESOURCE_KEYS if getattr(self, k) is not None]
        if len(keys) != 1:
            raise ValueError(
                "a grant names exactly one resource: one of " + ", ".join(RESOURCE_KEYS)
                + (f" (this one has {', '.join(keys)})" if keys else ""))
        key = keys[0]
        if key.endswith("_pattern"):
            try:
                re.compile(str(getattr(self, key)))
            except re.error as exc:
                raise ValueError(f"{key}: {getattr(self, key)!r} is not a regular expression "
                                 f"({exc})") from None
        elif self.priority is not None:
            raise ValueError(f"priority orders patterns; a grant on one {key} has none")
        if key == "prompt" and self.user is not None:
            # mlflow-oidc-auth keeps a user's grant on one prompt and on one registered model
            # in the same table, so it could not be told apart when read back.
            raise ValueError("a user's grant on one prompt is a `registered_model` grant "
                             "(prompts are registered models); groups can use `prompt`")
        return self

    @property
    def subject(self) -> tuple[Literal["group", "user"], str]:
        if self.group is not None:
            return "group", self.group
        assert self.user is not None
        return "user", self.user

    @property
    def resource(self) -> tuple[str, str]:
        """(config key, value): ("experiment_pattern", "^team-a-")."""
        for key in RESOURCE_KEYS:
            value = getattr(self, key)
            if value is not None:
                return key, str(value)
        raise AssertionError("validated: one resource")


class PermissionsSettings(BaseModel):
    """Grants as code. `scope: declared` reconciles the grants of the groups and users named
    here and leaves everyone else's alone; `all` makes the live grants exactly these."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    scope: Literal["declared", "all"] = Field(
        "declared", description="declared: only the subjects named in grants are reconciled; "
        "all: every experiment, registered model and prompt grant is.")
    grants: list[GrantSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_duplicates(self) -> PermissionsSettings:
        seen: dict[tuple[object, ...], int] = {}
        for i, grant in enumerate(self.grants):
            key = (grant.subject, grant.resource)
            if key in seen:
                kind, name = grant.subject
                rkey, rname = grant.resource
                raise ValueError(
                    f"permissions.grants[{i}]: {kind} {name!r} on {rkey} {rname!r} is "
                    f"already granted by permissions.grants[{seen[key]}]; keep one")
            seen[key] = i
        if self.scope == "all" and not self.grants:
            raise ValueError("permissions.scope: all with no grants would delete every grant "
                             "on the platform; declare the grants (`mlflow-stack permissions "
                             "export` writes today's) or use scope: declared")
        return self

    @property
    def managed(self) -> bool:
        return bool(self.grants)
