"""Keycloak's diff logic without Keycloak: an observation built by hand (a realm as apply leaves
it, then one thing changed), the steps plan makes from it, and what their `run` would call."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import pytest
from keycloak import KeycloakAdmin
from pydantic import SecretStr

from mlflow_stack.components import keycloak as kc
from mlflow_stack.components.keycloak.desired import DIRECTORY_ROLES, REALM_MANAGEMENT
from mlflow_stack.components.keycloak.teardown import teardown
from mlflow_stack.components.protocol import Step, System
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.progress import NullProgress

PUBLIC = "http://127.0.0.1:5123"
MAPPERS = ("mlflow-realm-role-mapper", "mlflow-audience-mapper", "mlflow-client-role-mapper")
TARGETS = [
    "role mlflow-admin", "role mlflow-user",
    "client mlflow", "client mlflow scopes", *(f"client mlflow mapper {m}" for m in MAPPERS),
    "client mlflow-cli", "client mlflow-cli scopes",
    *(f"client mlflow-cli mapper {m}" for m in MAPPERS),
    "user alice role mlflow-admin",
    "realm user profile attribute email",
]
# A realm's OIDC client scopes as Keycloak 26 ships them (no `openid`: it is implicit).
SCOPES = ("acr", "address", "basic", "email", "microprofile-jwt", "offline_access",
          "organization", "phone", "profile", "roles", "web-origins")
REALM_DEFAULTS = ["acr", "basic", "email", "profile", "roles", "web-origins"]
REALM_OPTIONALS = ["address", "microprofile-jwt", "offline_access", "organization", "phone"]


class FakeAdmin:
    """Records every call; answers what a run closure or teardown reads with `answers`."""

    def __init__(self, **answers: Any) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.answers = answers

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args))
            answer = self.answers.get(name)
            return answer(*args) if callable(answer) else answer
        return call

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def make_settings(client_secret: str | None = None, **auth: Any) -> Settings:
    settings = Settings.model_validate({
        "server": {"port": 5123},
        "auth": {"provider": "keycloak", "keycloak_url": "https://kc.test", "realm": "r",
                 "realm_admin_users": ["alice"], **auth},
    })
    return settings.model_copy(update={"secrets": Secrets.model_construct(
        oidc_client_secret=SecretStr(client_secret) if client_secret else None)})


def session(admin: FakeAdmin | None = None) -> kc.AdminSession:
    return kc.AdminSession(cast(KeycloakAdmin, admin or FakeAdmin()), "https://kc.test",
                           "admin", "r")


def in_sync(settings: Settings) -> kc.Observed:
    """The realm exactly as apply leaves it for `settings`."""
    want = kc.desired(settings)
    obs = kc.Observed(roles=set(want.roles), scope_ids={n: f"id-{n}" for n in SCOPES},
                      realm_default_scopes=list(REALM_DEFAULTS),
                      realm_optional_scopes=list(REALM_OPTIONALS),
                      users={u: f"uid-{u}" for u in want.admin_users},
                      user_roles={u: {want.admin_role, "default-roles-r"}
                                  for u in want.admin_users},
                      identity_editors=["admin"] if want.lock_identity else None)
    for spec in want.clients:
        rep = copy.deepcopy(spec.client)
        rep["attributes"] = {**rep["attributes"], "client.secret.creation.time": "1"}
        obs.clients[spec.client_id] = kc.ObservedClient(
            rep, uuid=f"uuid-{spec.client_id}",
            default_scopes={*REALM_DEFAULTS, *(n for n in spec.default_scopes if n in SCOPES)}
            - set(spec.optional_scopes),
            optional_scopes={*REALM_OPTIONALS, *(n for n in spec.optional_scopes
                                                 if n in SCOPES)} - set(spec.default_scopes),
            mappers={m["name"]: {**copy.deepcopy(m), "id": f"mid-{m['name']}"}
                     for m in spec.mappers})
    if want.directory_roles:
        obs.service_roles = set(want.directory_roles)
    return obs


def plan(settings: Settings, obs: kc.Observed,
         admin: FakeAdmin | None = None) -> list[Step]:
    admin = admin or FakeAdmin()
    steps = kc.SYSTEM.plan(session(admin), settings, obs)
    assert admin.calls == [], "plan must not call Keycloak"
    return steps


def pending(steps: list[Step]) -> list[Step]:
    return [s for s in steps if s.pending]


def only_change(steps: list[Step]) -> Step:
    changed = pending(steps)
    assert len(changed) == 1, [s.change for s in changed]
    return changed[0]


def test_system_is_the_protocol() -> None:
    system: System = kc.SYSTEM
    assert system.name == "keycloak"
    assert system.where(make_settings()) == "realm r at https://kc.test"


def test_in_sync_realm_plans_nothing_to_run() -> None:
    steps = plan(make_settings(), in_sync(make_settings()))
    assert [s.change.target for s in steps] == TARGETS
    assert all(s.change.action == "unchanged" and s.run is None and not s.destructive
               and s.change.system == "keycloak" for s in steps)
    # openid is not a client scope: said so, not attached.
    scopes = next(s for s in steps if s.change.target == "client mlflow scopes")
    assert "openid: implicit in OIDC, not a client scope" in scopes.change.detail


def test_wrong_redirect_uri_updates_the_client_exactly() -> None:
    settings = make_settings()
    obs = in_sync(settings)
    rep = obs.clients["mlflow"].rep
    assert rep is not None
    rep["redirectUris"] = [f"{PUBLIC}/*", f"{PUBLIC}/oauth2/callback", "https://evil.test/*"]
    admin = FakeAdmin()
    step = only_change(plan(settings, obs, admin))
    assert (step.change.action, step.change.target) == ("update", "client mlflow")
    assert step.change.detail == (f"redirectUris: + {PUBLIC}/callback, - https://evil.test/*")
    assert step.run is not None and not step.destructive
    step.run(NullProgress())
    [(name, (uuid, payload))] = admin.calls
    assert (name, uuid) == ("update_client", "uuid-mlflow")
    assert sorted(payload["redirectUris"]) == sorted(
        [f"{PUBLIC}/*", f"{PUBLIC}/oauth2/callback", f"{PUBLIC}/callback"])
    # Attributes Keycloak keeps on its own survive the update.
    assert payload["attributes"]["client.secret.creation.time"] == "1"


def test_changed_settings_are_listed_field_by_field() -> None:
    settings = make_settings()
    obs = in_sync(settings)
    rep = obs.clients["mlflow"].rep
    assert rep is not None
    rep.update(publicClient=True, implicitFlowEnabled=True)
    rep["attributes"]["access.token.lifespan"] = "600"
    step = only_change(plan(settings, obs))
    assert step.change.detail.split("; ") == [
        "publicClient: true → false", "implicitFlowEnabled: true → false",
        "attributes.access.token.lifespan: 600 → 3600"]


def test_missing_mapper_is_added() -> None:
    settings = make_settings()
    obs = in_sync(settings)
    del obs.clients["mlflow"].mappers["mlflow-audience-mapper"]
    admin = FakeAdmin()
    step = only_change(plan(settings, obs, admin))
    assert (step.change.action, step.change.target) == (
        "create", "client mlflow mapper mlflow-audience-mapper")
    assert step.change.detail == "oidc-audience-mapper: aud mlflow (access token)"
    assert step.run is not None
    step.run(NullProgress())
    [(name, (uuid, mapper))] = admin.calls
    assert (name, uuid, mapper["name"]) == (
        "add_mapper_to_client", "uuid-mlflow", "mlflow-audience-mapper")


def test_changed_mapper_config_is_updated_in_place() -> None:
    settings = make_settings()
    obs = in_sync(settings)
    obs.clients["mlflow"].mappers["mlflow-audience-mapper"]["config"]["id.token.claim"] = "true"
    admin = FakeAdmin()
    step = only_change(plan(settings, obs, admin))
    assert step.change.action == "update"
    assert step.change.detail == "config.id.token.claim: true → false"
    assert step.run is not None
    step.run(NullProgress())
    assert admin.names() == ["update_client_mapper"]


def test_mapper_of_another_type_is_replaced() -> None:
    settings = make_settings()
    obs = in_sync(settings)
    obs.clients["mlflow"].mappers["mlflow-realm-role-mapper"]["protocolMapper"] = "oidc-x"
    admin = FakeAdmin()
    step = only_change(plan(settings, obs, admin))
    assert "protocolMapper: oidc-x → oidc-usermodel-realm-role-mapper" in step.change.detail
    assert step.run is not None
    step.run(NullProgress())
    assert admin.names() == ["remove_client_mapper", "add_mapper_to_client"]


def test_missing_role_is_created() -> None:
    settings = make_settings()
    obs = in_sync(settings)
    obs.roles.discard("mlflow-user")
    admin = FakeAdmin()
    step = only_change(plan(settings, obs, admin))
    assert (step.change.action, step.change.target, step.change.detail) == (
        "create", "role mlflow-user", "MLflow standard user role")
    assert step.run is not None
    step.run(NullProgress())
    assert admin.calls == [("create_realm_role", (
        {"name": "mlflow-user", "description": "MLflow standard user role"},))]


def test_missing_admin_grant_is_made() -> None:
    settings = make_settings()
    obs = in_sync(settings)
    obs.user_roles["alice"] = {"default-roles-r"}
    admin = FakeAdmin(get_realm_role=lambda name: {"name": name})
    step = only_change(plan(settings, obs, admin))
    assert (step.change.action, step.change.target) == ("create", "user alice role mlflow-admin")
    assert step.run is not None
    step.run(NullProgress())
    # The role is read at run time (an earlier step may have just created it).
    assert admin.calls[-1] == ("assign_realm_roles", ("uid-alice", [{"name": "mlflow-admin"}]))


def test_scope_attached_the_other_way_is_moved() -> None:
    settings = make_settings()
    obs = in_sync(settings)
    have = obs.clients["mlflow"]
    have.default_scopes.discard("offline_access")
    have.optional_scopes.add("offline_access")
    admin = FakeAdmin()
    step = only_change(plan(settings, obs, admin))
    assert step.change.target == "client mlflow scopes"
    assert "default: + offline_access (moved from optional)" in step.change.detail
    assert step.run is not None
    step.run(NullProgress())
    assert admin.calls == [
        ("delete_client_optional_client_scope", ("uuid-mlflow", "id-offline_access")),
        ("add_client_default_client_scope", ("uuid-mlflow", "id-offline_access", {}))]


def test_email_editable_by_users_is_locked() -> None:
    settings = make_settings()
    obs = in_sync(settings)
    obs.identity_editors = ["admin", "user"]
    step = only_change(plan(settings, obs))
    assert step.change.target == "realm user profile attribute email"
    assert step.change.detail.startswith("edit: admin, user → admin")
    assert not step.destructive


def test_lock_off_plans_no_profile_step() -> None:
    settings = make_settings(lock_identity_attribute=False)
    steps = plan(settings, in_sync(settings))
    assert "realm user profile attribute email" not in [s.change.target for s in steps]


def test_service_account_roles_missing() -> None:
    settings = make_settings(access_tokens=True)
    obs = in_sync(settings)
    obs.service_roles = {"view-users"}
    step = only_change(plan(settings, obs))
    assert (step.change.action, step.change.target) == (
        "create", "client mlflow service account roles")
    assert step.change.detail.startswith(f"{REALM_MANAGEMENT}: query-clients")
    ok = plan(settings, in_sync(settings))
    assert [s.change.detail for s in ok if "service account" in s.change.target] == [
        ", ".join(DIRECTORY_ROLES)]


def test_empty_realm_creates_everything_in_order() -> None:
    settings = make_settings()
    obs = kc.Observed(roles=set(), scope_ids={n: f"id-{n}" for n in SCOPES},
                      realm_default_scopes=list(REALM_DEFAULTS),
                      realm_optional_scopes=list(REALM_OPTIONALS),
                      users={"alice": "uid-alice"}, user_roles={"alice": set()},
                      identity_editors=["admin", "user"],
                      clients={"mlflow": kc.ObservedClient(None),
                               "mlflow-cli": kc.ObservedClient(None)})
    steps = plan(settings, obs)
    assert [s.change.target for s in steps] == TARGETS
    assert all(s.pending and not s.destructive for s in steps)
    # One POST per client carries its scopes and mappers: their records have nothing to run.
    runs = {s.change.target: s.run is not None for s in steps}
    assert [t for t, r in runs.items() if not r] == [
        "client mlflow scopes", *(f"client mlflow mapper {m}" for m in MAPPERS),
        "client mlflow-cli scopes", *(f"client mlflow-cli mapper {m}" for m in MAPPERS)]


@pytest.mark.parametrize("configured", [None, "s3cret-configured"])
def test_new_confidential_client_takes_the_configured_secret(configured: str | None) -> None:
    settings = make_settings(client_secret=configured)
    obs = in_sync(settings)
    obs.clients = {"mlflow": kc.ObservedClient(None), "mlflow-cli": kc.ObservedClient(None)}
    admin = FakeAdmin(create_client=lambda rep: f"new-{rep['clientId']}")
    steps = plan(settings, obs, admin)
    for step in steps:
        if step.run is not None and step.change.target.startswith("client "):
            step.run(NullProgress())
    posted = {args[0]["clientId"]: args[0] for name, args in admin.calls
              if name == "create_client"}
    assert posted["mlflow"].get("secret") == configured
    assert "secret" not in posted["mlflow-cli"], "a public client has no secret"
    # The server client's scopes: the reference's, plus the realm's defaults; openid implicit.
    assert set(posted["mlflow"]["defaultClientScopes"]) == {
        "acr", "basic", "email", "profile", "roles", "web-origins", "offline_access"}
    assert set(posted["mlflow"]["optionalClientScopes"]) == {
        "address", "microprofile-jwt", "organization", "phone"}
    created = next(s for s in steps if s.change.target == "client mlflow").change.detail
    assert ("secret: the configured one" in created) == (configured is not None)
    assert "s3cret" not in " ".join(s.change.detail for s in steps)


def test_teardown_keeps_without_purge_and_marks_deletions_destructive() -> None:
    settings = make_settings()
    answers: dict[str, Any] = {"get_client_id": lambda cid: f"uuid-{cid}",
                               "get_realm_role_members": lambda role: [{"id": "u"}]}
    kept = teardown(session(FakeAdmin(**answers)), settings, purge=False)
    assert [(s.change.action, s.run, s.destructive) for s in kept] == [
        ("unchanged", None, False)] * 4
    admin = FakeAdmin(**answers)
    purged = teardown(session(admin), settings, purge=True)
    assert [(s.change.action, s.change.target, s.destructive) for s in purged] == [
        ("delete", "client mlflow", True), ("delete", "client mlflow-cli", True),
        ("delete", "role mlflow-admin", True), ("delete", "role mlflow-user", True)]
    assert "delete_client" not in admin.names(), "teardown reads; only run deletes"
    for step in purged:
        assert step.run is not None
        step.run(NullProgress())
    assert [c for c in admin.calls if c[0].startswith("delete")] == [
        ("delete_client", ("uuid-mlflow",)), ("delete_client", ("uuid-mlflow-cli",)),
        ("delete_realm_role", ("mlflow-admin",)), ("delete_realm_role", ("mlflow-user",))]
