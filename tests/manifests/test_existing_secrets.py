"""Render with kubernetes.existing_secrets: the manifests refer to the cluster's Secrets by the
names and keys the config gives, no Secret of ours holds their values, and the kustomization
comment lists them as Secrets that must exist."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from harness.kube import SECRET_KEY_VALUE, SECRET_VALUES, find, validate_strict
from mlflow_stack.config.model import Settings
from mlflow_stack.manifests.render import render, write_manifests

EXISTING: dict[str, Any] = {
    "database": {"name": "db-creds", "password_key": "pw"},
    "s3": {"name": "s3-creds", "access_key_id_key": "id", "secret_access_key_key": "key.secret"},
    "oidc_client": {"name": "oidc-creds", "client_secret_key": "cs"},
    "session_key": {"name": "session", "key": "flask_key"},
    "pull_secret": "regcred",
    "tls": "wildcard-cert",
}


def with_existing(settings: Settings, **existing: Any) -> Settings:
    data = settings.model_dump(mode="json", exclude={"secrets"})
    data["kubernetes"]["existing_secrets"] = existing or EXISTING
    return Settings.model_validate(data).model_copy(update={"secrets": settings.secrets})


def secret_refs(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"],
                        e["valueFrom"]["secretKeyRef"]["key"])
            for c in obj["spec"]["template"]["spec"]["containers"] for e in c["env"]
            if "valueFrom" in e}


def test_the_pods_refer_to_the_existing_secrets_and_keys(
        reference_with_secrets: Settings) -> None:
    settings = with_existing(reference_with_secrets)
    rendered = render(settings, include_secrets=True, secret_key=SecretStr(SECRET_KEY_VALUE))
    for kind in ("Deployment", "Job"):
        obj = find(rendered.objects, kind)
        refs = secret_refs(obj)
        assert refs["PGPASSWORD"] == ("db-creds", "pw")
        assert refs["AWS_ACCESS_KEY_ID"] == ("s3-creds", "id")
        assert refs["AWS_SECRET_ACCESS_KEY"] == ("s3-creds", "key.secret")
        assert obj["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    refs = secret_refs(find(rendered.objects, "Deployment"))
    assert refs["OIDC_CLIENT_SECRET"] == ("oidc-creds", "cs")
    assert refs["SECRET_KEY"] == ("session", "flask_key")
    ingress = find(rendered.objects, "Ingress")
    assert ingress["spec"]["tls"][0]["secretName"] == "wildcard-cert"
    for obj in rendered.objects:
        validate_strict(obj, "1.31.0")


def test_no_secret_of_ours_holds_what_an_existing_one_holds(
        reference_with_secrets: Settings) -> None:
    settings = with_existing(reference_with_secrets)
    rendered = render(settings, include_secrets=True, secret_key=SecretStr(SECRET_KEY_VALUE))
    ours = {o["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                    for k, v in o["data"].items()}
            for o in rendered.objects if o["kind"] == "Secret"}
    # Our Secrets keep only what is not secret (the reference's connection details for other
    # tools); the session key, pull secret and TLS copy are not rendered at all.
    assert "DB_PASSWORD" not in ours["mlflow-db-secret"]
    assert ours["mlflow-db-secret"]["DB_USER"] == "admin"
    assert set(ours["mlflow-s3-secret"]) == {"S3_ENDPOINT_URL"}
    assert ours["oauth2-proxy-secret"] == {"client-id": "mlflow"}
    assert not {"mlflow-secret-key", "harbor-registry-secret", "mlflow-tls-secret"} & set(ours)
    texts = " ".join(v for data in ours.values() for k, v in data.items()
                     if k != "MLFLOW_CLIENT_SECRET")  # code-server's copy: see the README
    for name in ("db_password", "s3_access_key_id", "s3_secret_access_key", "harbor_robot_token"):
        assert SECRET_VALUES[name] not in texts, name
    assert SECRET_KEY_VALUE not in texts
    needed = {n.name: n for n in rendered.secrets_needed}
    assert set(needed) == {"db-creds", "s3-creds", "oidc-creds", "session", "regcred",
                           "wildcard-cert"}
    assert needed["s3-creds"].keys == ("id", "key.secret")
    assert needed["regcred"].type == "kubernetes.io/dockerconfigjson"
    assert all(n.existing is not None and n.missing == () for n in needed.values())


def test_an_existing_secret_under_one_of_our_names_is_not_rendered(
        reference_with_secrets: Settings) -> None:
    """External Secrets taking over the reference's own name: ours is not rendered over it."""
    settings = with_existing(reference_with_secrets,
                             database={"name": "mlflow-db-secret", "password_key": "pw"})
    rendered = render(settings, include_secrets=True, secret_key=SecretStr(SECRET_KEY_VALUE))
    assert not [o for o in rendered.objects
                if o["kind"] == "Secret" and o["metadata"]["name"] == "mlflow-db-secret"]
    assert secret_refs(find(rendered.objects, "Deployment"))["PGPASSWORD"] == (
        "mlflow-db-secret", "pw")


def test_only_the_backends_in_use_refer_to_existing_secrets() -> None:
    settings = Settings.model_validate({"kubernetes": {"existing_secrets": EXISTING}})
    rendered = render(settings)  # SQLite, local artifacts, no SSO, no registry, no host
    assert [n for n in rendered.secrets_needed if n.existing is not None] == []
    assert secret_refs(find(rendered.objects, "Deployment")) == {}


def test_the_kustomization_says_they_must_exist(reference_with_secrets: Settings,
                                                tmp_path: Path) -> None:
    write_manifests(render(with_existing(reference_with_secrets)), tmp_path)
    text = (tmp_path / "kustomization.yaml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("#   mlflow/db-creds"))
    assert "keys pw" in line and "kubernetes.existing_secrets.database" in line
    assert "never writes it" in line
    assert not list(tmp_path.glob("secret-*.yaml"))


@pytest.mark.parametrize("existing", [{"pull_secret": "regcred"}, {"tls": "wildcard-cert"}])
def test_without_the_setting_our_defaults_stay(reference_with_secrets: Settings,
                                               existing: dict[str, str]) -> None:
    """Naming one existing Secret changes nothing about the others."""
    rendered = render(with_existing(reference_with_secrets, **existing), include_secrets=True,
                      secret_key=SecretStr(SECRET_KEY_VALUE))
    refs = secret_refs(find(rendered.objects, "Deployment"))
    assert refs["PGPASSWORD"] == ("mlflow-db-secret", "DB_PASSWORD")
    assert refs["SECRET_KEY"] == ("mlflow-secret-key", "SECRET_KEY")
