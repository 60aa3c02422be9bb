"""Undo apply. Without purge nothing in Keycloak is removed; with purge the clients (with their
mappers and secret) and the two realm roles are deleted.

Why keep everything without purge: the client secret is referenced by deployed servers and
helpers (a new client gets a new secret), and deleting a role deletes every user's grant of it,
including grants made by hand that apply cannot tell from its own. Revoking only the grants
apply makes was rejected for the same reason. The realm and users are never touched. A realm
that does not exist means there is nothing to remove: connect raises RealmNotFound (Absent).
"""

from __future__ import annotations

from keycloak.exceptions import KeycloakError

from mlflow_stack.components.keycloak.plan import change
from mlflow_stack.components.keycloak.session import AdminSession
from mlflow_stack.components.protocol import Step
from mlflow_stack.config.model import Settings
from mlflow_stack.progress import Progress


def teardown(s: AdminSession, settings: Settings, *, purge: bool) -> list[Step]:
    """The clients, then the roles. Reads now; deletes only when the steps run."""
    a = settings.auth
    steps: list[Step] = []
    for client_id in (a.client_id, a.cli_client_id):
        if client_id is None:
            continue
        with s.call(f"read client {client_id}"):
            uuid = s.admin.get_client_id(client_id)
        if uuid is None:
            steps.append(Step(change("unchanged", f"client {client_id}", "does not exist")))
        elif not purge:
            steps.append(Step(change("unchanged", f"client {client_id}",
                                     "kept (--purge deletes it)")))
        else:
            def delete_client(_: Progress, client_id: str = client_id, uuid: str = uuid) -> None:
                with s.call(f"delete client {client_id}"):
                    s.admin.delete_client(uuid)
            steps.append(Step(change("delete", f"client {client_id}",
                                     "with its mappers and secret"),
                              delete_client, destructive=True))
    for role in (a.admin_role, a.user_role):
        with s.call(f"read realm role {role}"):
            try:
                members = len(s.admin.get_realm_role_members(role))
            except KeycloakError as exc:
                if exc.response_code != 404:
                    raise
                steps.append(Step(change("unchanged", f"role {role}", "does not exist")))
                continue
        held = f"held directly by {members} user(s)"
        if not purge:
            steps.append(Step(change("unchanged", f"role {role}",
                                     f"kept, {held} (--purge deletes it)")))
            continue

        def delete_role(_: Progress, role: str = role) -> None:
            with s.call(f"delete realm role {role}"):
                s.admin.delete_realm_role(role)
        steps.append(Step(change("delete", f"role {role}", f"{held}; their grants go with it"),
                          delete_role, destructive=True))
    return steps
