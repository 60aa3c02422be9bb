"""Secrets the cluster already has (kubernetes.existing_secrets) against a real kube-apiserver:
apply refers to them and never writes, prunes or uninstalls them, even when they carry our
labels; a missing Secret or key is named by plan and refused by apply before any write; the
values apply's own steps need are read from them (resolve)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.codecs import from_dict
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Secret

from components.test_kubernetes_apply import admin, apply, changed, make_settings, meta, secrets
from harness.kubeapi import KubeAPIServer
from mlflow_stack.components import kubernetes as k8s
from mlflow_stack.config.model import Settings
from mlflow_stack.config.secrets import Secrets
from mlflow_stack.deploy import plan_system, teardown_system
from mlflow_stack.errors import ConfigError
from mlflow_stack.kubernetes.sources import SecretValueMissing
from mlflow_stack.manifests import labels as lb
from mlflow_stack.resolve import resolve

__all__ = ["admin"]  # the module fixture, shared
pytestmark = pytest.mark.integration

EXISTING: dict[str, Any] = {
    "database": {"name": "db-creds", "password_key": "pw"},
    "s3": {"name": "s3-creds", "access_key_id_key": "id", "secret_access_key_key": "key"},
    "oidc_client": {"name": "oidc-creds", "client_secret_key": "cs"},
    "session_key": {"name": "session", "key": "flask"},
    "pull_secret": "regcred",
    "tls": "wildcard",
}
VALUES = {"db-creds": {"pw": "db-from-vault"}, "s3-creds": {"id": "AKVAULT", "key": "s3-vault"},
          "oidc-creds": {"cs": "oidc-from-vault"}, "session": {"flask": "sess-from-vault"},
          "regcred": {".dockerconfigjson": '{"auths": {}}'},
          "wildcard": {"tls.crt": "cert", "tls.key": "key"}}
TYPES = {"regcred": "kubernetes.io/dockerconfigjson", "wildcard": "kubernetes.io/tls"}


@pytest.fixture
def ns() -> str:
    return f"mlf-{uuid.uuid4().hex[:8]}"


def external_secrets(admin: Client, ns: str, labels: dict[str, str] | None = None) -> None:
    """The Secrets as External Secrets' controller writes them: its own field manager and
    label (no ownerReference: the harness runs no garbage collector to honour one)."""
    admin.create(Namespace(metadata=ObjectMeta(name=ns)))
    ext = Client(config=admin.config, field_manager="external-secrets", trust_env=False)
    for name, data in VALUES.items():
        ext.apply(from_dict({
            "apiVersion": "v1", "kind": "Secret", "type": TYPES.get(name, "Opaque"),
            "metadata": {"name": name, "namespace": ns, "labels": {
                "reconcile.external-secrets.io/managed": "true", **(labels or {})}},
            "stringData": data}))


def versions(admin: Client, ns: str) -> dict[str, str | None]:
    return {name: meta(admin.get(Secret, name, namespace=ns)).resourceVersion
            for name in VALUES}


def settings_for(kube_api: KubeAPIServer, ns: str, secret_values: Secrets | None = None,
                 **existing: Any) -> Settings:
    return make_settings(kube_api.admin_kubeconfig, ns, secret_values,
                         kubernetes={"existing_secrets": existing or EXISTING})


def test_apply_refers_to_them_and_never_writes_them(kube_api: KubeAPIServer, admin: Client,
                                                    ns: str) -> None:
    external_secrets(admin, ns)
    before = versions(admin, ns)
    settings = settings_for(kube_api, ns)
    report = apply(settings, kube_api)
    existing = {c.target: c for c in report.changes if c.target.split("/")[-1] in VALUES}
    assert {c.action for c in existing.values()} == {"unchanged"}, existing
    assert "referred to, not managed" in existing[f"Secret {ns}/db-creds"].detail
    assert versions(admin, ns) == before
    # No session key of ours was created, and none of ours carries their values.
    assert not any("session key" in n for n in report.notes)
    ours = [meta(s).name for s in admin.list(
        Secret, namespace=ns, labels={"app.kubernetes.io/managed-by": lb.MANAGED_BY})]
    assert "mlflow-secret-key" not in ours and "harbor-registry-secret" not in ours
    deployment = admin.get(Deployment, "mlflow", namespace=ns)
    assert deployment.spec is not None and deployment.spec.template.spec is not None
    pod = deployment.spec.template.spec
    refs = {e.name: (e.valueFrom.secretKeyRef.name, e.valueFrom.secretKeyRef.key)
            for e in pod.containers[0].env or [] if e.valueFrom and e.valueFrom.secretKeyRef}
    assert refs["PGPASSWORD"] == ("db-creds", "pw")
    assert refs["SECRET_KEY"] == ("session", "flask")
    assert [p.name for p in pod.imagePullSecrets or []] == ["regcred"]
    # A second plan: no drift, and still nothing written to theirs.
    assert changed(plan_system(k8s.SYSTEM, settings)) == []
    assert apply(settings, kube_api).writes == 0
    assert versions(admin, ns) == before
    # uninstall leaves them.
    removed = teardown_system(k8s.SYSTEM, settings)
    assert not [c for c in removed if c.action == "delete"
                and c.target.split("/")[-1] in VALUES]
    assert versions(admin, ns) == before


def test_a_missing_key_or_secret_is_named_and_refused_before_any_write(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    external_secrets(admin, ns)
    settings = settings_for(kube_api, ns)
    apply(settings, kube_api)
    admin.patch(Secret, "db-creds", {"data": {"pw": None}}, namespace=ns)
    admin.delete(Secret, "session", namespace=ns)
    planned = {c.target: c for c in changed(plan_system(k8s.SYSTEM, settings))}
    assert planned[f"Secret {ns}/db-creds"].detail == (
        f"Secret {ns}/db-creds has no key 'pw' "
        "(kubernetes.existing_secrets.database.password_key)")
    assert planned[f"Secret {ns}/session"].detail == (
        f"Secret {ns}/session does not exist (kubernetes.existing_secrets.session_key.name)")
    # A change elsewhere is not applied either: the refusal comes first.
    more = make_settings(kube_api.admin_kubeconfig, ns,
                         kubernetes={"existing_secrets": EXISTING, "replicas": 2})
    with pytest.raises(ConfigError, match=r"has no key 'pw'") as refused:
        apply(more, kube_api)
    assert "never creates or changes" in (refused.value.hint or "")
    deployment = admin.get(Deployment, "mlflow", namespace=ns)
    assert deployment.spec is not None and deployment.spec.replicas == 1
    with pytest.raises(ApiError):
        admin.get(Secret, "session", namespace=ns)  # never created by us


def test_switching_to_them_prunes_ours_but_never_theirs(
        kube_api: KubeAPIServer, admin: Client, ns: str) -> None:
    """A Secret of ours the config now names as existing (External Secrets took it over,
    labels and all) is kept; the session key Secret of ours that is no longer used goes."""
    apply(make_settings(kube_api.admin_kubeconfig, ns), kube_api)
    assert admin.get(Secret, "mlflow-secret-key", namespace=ns)
    settings = settings_for(kube_api, ns, None,
                            database={"name": "mlflow-db-secret", "password_key": "DB_PASSWORD"},
                            session_key={"name": "session"})
    ext = Client(config=admin.config, field_manager="external-secrets", trust_env=False)
    ext.apply(from_dict({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": "session", "namespace": ns},
                         "stringData": {"SECRET_KEY": "sess-from-vault"}}))
    taken = meta(admin.get(Secret, "mlflow-db-secret", namespace=ns))
    assert taken.labels and taken.labels["app.kubernetes.io/managed-by"] == lb.MANAGED_BY
    planned = {c.target: c.action for c in changed(plan_system(k8s.SYSTEM, settings))}
    assert planned[f"Secret {ns}/mlflow-secret-key"] == "delete"
    assert f"Secret {ns}/mlflow-db-secret" not in planned
    apply(settings, kube_api)
    assert meta(admin.get(Secret, "mlflow-db-secret", namespace=ns)).resourceVersion == \
        taken.resourceVersion
    teardown_system(k8s.SYSTEM, settings)
    admin.get(Secret, "mlflow-db-secret", namespace=ns)  # still there


def test_resolve_reads_what_apply_needs_from_them(kube_api: KubeAPIServer, admin: Client,
                                                  ns: str) -> None:
    external_secrets(admin, ns)
    # The environment's values (a stale ADMIN_PASSWORD, say) lose to what the pods will use.
    settings = settings_for(kube_api, ns, secrets())
    resolved = resolve(settings, cluster=True, client_secret="skip").secrets
    assert resolved.effective_db_password is not None
    assert resolved.effective_db_password.get_secret_value() == "db-from-vault"
    assert resolved.s3_access_key_id is not None
    assert resolved.s3_access_key_id.get_secret_value() == "AKVAULT"
    assert resolved.oidc_client_secret is not None
    assert resolved.oidc_client_secret.get_secret_value() == "oidc-from-vault"
    # Nothing in the environment at all: still resolved (External Secrets users).
    bare = settings_for(kube_api, ns, Secrets.model_construct())
    resolved = resolve(bare, cluster=True, client_secret="skip").secrets
    assert bare.model_copy(update={"secrets": resolved}).missing_secrets() == []
    # Off the cluster (target services) nothing is read.
    assert resolve(bare, cluster=False, client_secret="skip").secrets.db_password is None

    admin.patch(Secret, "s3-creds", {"data": {"key": None}}, namespace=ns)
    admin.delete(Secret, "db-creds", namespace=ns)
    with pytest.raises(SecretValueMissing) as missing:
        resolve(bare, cluster=True, client_secret="skip")
    assert missing.value.exit_code == 2
    assert missing.value.message == (
        f"Secret {ns}/db-creds does not exist (kubernetes.existing_secrets.database.name); "
        f"Secret {ns}/s3-creds has no key 'key' "
        "(kubernetes.existing_secrets.s3.secret_access_key_key)")
