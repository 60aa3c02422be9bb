"""`permissions export`: today's live grants in the config's own format."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from mlflow_stack.permissions.auth_db import AuthDb
from mlflow_stack.permissions.grants import Grant

_KINDS = {"experiment": 0, "registered_model": 1, "prompt": 2}


def _order(grant: Grant) -> tuple[object, ...]:
    return (grant.subject_kind, grant.subject, _KINDS[grant.resource], grant.pattern, grant.name)


@dataclass(frozen=True)
class Export:
    text: str  # YAML with one top-level key, `permissions`, ready to paste into a config
    grants: int
    skipped: list[str]  # live grants the format cannot name (deleted experiments)


def export(client: AuthDb, *, header: str = "") -> Export:
    """Every live grant in scope of `permissions.scope: all`, sorted by subject."""
    live = client.read()
    grants = sorted(live.grants, key=_order)
    body = yaml.safe_dump({"permissions": {"scope": "all",
                                           "grants": [g.to_spec() for g in grants]}},
                          sort_keys=False, default_flow_style=False, allow_unicode=True)
    text = "".join(f"# {line}\n" for line in header.splitlines()) + body
    return Export(text, len(grants), list(live.orphans))
