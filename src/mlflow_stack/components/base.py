"""The record every component returns for what it would do or did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["create", "update", "delete", "unchanged"]


@dataclass(frozen=True)
class Change:
    system: str  # "postgres", "bucket", "keycloak", "kubernetes"
    action: Action
    target: str  # what it is about, e.g. "database mlflow"
    detail: str = ""

    @property
    def is_change(self) -> bool:
        return self.action != "unchanged"
