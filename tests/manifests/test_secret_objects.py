"""Secret objects: referenced by name by default, rendered with values only when asked."""

from __future__ import annotations

import base64
import json
from typing import Any

from pydantic import SecretStr

from harness.kube import SECRET_KEY_VALUE, SECRET_VALUES, find, kinds
from mlflow_stack.config.model import Settings
from mlflow_stack.launch.spec import EnvVar, SecretRef, ServerLaunch
from mlflow_stack.manifests.render import render
from mlflow_stack.manifests.secret_objects import server_secret_specs


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_no_secrets_by_default(reference_with_secrets: Settings) -> None:
    rendered = render(reference_with_secrets)
    assert "Secret" not in kinds(rendered.objects)
    needed = {(n.namespace, n.name) for n in rendered.secrets_needed}
    assert needed == {
        ("mlflow", "mlflow-db-secret"), ("mlflow", "mlflow-s3-secret"),
        ("mlflow", "oauth2-proxy-secret"), ("mlflow", "mlflow-secret-key"),
        ("mlflow", "harbor-registry-secret"), ("mlflow", "mlflow-tls-secret"),
        ("mlflow", "mlflow-client-env"), ("code-server", "mlflow-client-env"),
    }
    tls = next(n for n in rendered.secrets_needed if n.name == "mlflow-tls-secret")
    assert "example-com-tls" in tls.how and "default" in tls.how


def test_included_secrets_hold_the_values(reference_with_secrets: Settings) -> None:
    rendered = render(reference_with_secrets, include_secrets=True,
                      secret_key=SecretStr(SECRET_KEY_VALUE))
    objects = rendered.objects
    db = find(objects, "Secret", "mlflow-db-secret")
    assert db["type"] == "Opaque"
    assert decoded(db) == {
        "DB_HOST": "postgresql-official.postgres.svc.cluster.local", "DB_PORT": "5432",
        "DB_NAME": "mlflow", "DB_USER": "admin", "DB_PASSWORD": SECRET_VALUES["db_password"]}
    assert decoded(find(objects, "Secret", "mlflow-s3-secret")) == {
        "AWS_ACCESS_KEY_ID": SECRET_VALUES["s3_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": SECRET_VALUES["s3_secret_access_key"],
        "S3_ENDPOINT_URL": "https://s3.example.com"}
    assert decoded(find(objects, "Secret", "oauth2-proxy-secret")) == {
        "client-id": "mlflow", "client-secret": SECRET_VALUES["oidc_client_secret"]}
    assert decoded(find(objects, "Secret", "mlflow-secret-key")) == {
        "SECRET_KEY": SECRET_KEY_VALUE}
    pull = find(objects, "Secret", "harbor-registry-secret")
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(decoded(pull)[".dockerconfigjson"])
    entry = config["auths"]["harbor.example.com"]
    assert entry["username"] == "robot$thinkube-deployer"
    assert entry["password"] == SECRET_VALUES["harbor_robot_token"]
    assert base64.b64decode(entry["auth"]).decode() == \
        f"robot$thinkube-deployer:{SECRET_VALUES['harbor_robot_token']}"
    # The certificate is never in the settings: always provided (copied by apply).
    assert [n.name for n in rendered.secrets_needed] == ["mlflow-tls-secret"]
    # Secrets come before anything that uses them.
    order = kinds(objects)
    assert max(i for i, k in enumerate(order) if k == "Secret") < order.index("Deployment")


def test_secret_key_is_never_generated_by_render(reference_with_secrets: Settings) -> None:
    rendered = render(reference_with_secrets, include_secrets=True)
    assert "mlflow-secret-key" not in [o["metadata"]["name"] for o in rendered.objects]
    needed = next(n for n in rendered.secrets_needed if n.name == "mlflow-secret-key")
    assert needed.missing == ("SECRET_KEY",)


def test_unknown_values_mean_reference_only(reference: Settings) -> None:
    """With --include-secrets but no secrets in the environment nothing half-filled is written."""
    rendered = render(reference, include_secrets=True, secret_key=SecretStr(SECRET_KEY_VALUE))
    names = [o["metadata"]["name"] for o in rendered.objects if o["kind"] == "Secret"]
    assert names == ["mlflow-secret-key"]
    db = next(n for n in rendered.secrets_needed if n.name == "mlflow-db-secret")
    assert db.missing == ("DB_PASSWORD",)
    assert "ADMIN_PASSWORD" in db.how


def test_secrets_the_server_env_refers_to_are_rendered(reference_with_secrets: Settings) -> None:
    """The launch builder is the authority: any SecretRef it adds gets a Secret (e.g. the SSO
    layer's env added by another module), and SECRET_KEY comes from the caller."""
    launch = ServerLaunch(argv=["mlflow", "server", "--backend-store-uri", "x"], env=[
        EnvVar("OIDC_CLIENT_SECRET", secret=SecretRef(
            "oauth2-proxy-secret", "client-secret", SecretStr("from-launch"))),
        EnvVar("SECRET_KEY", secret=SecretRef("mlflow-secret-key", "SECRET_KEY", None)),
        EnvVar("EXTRA", secret=SecretRef("extra-secret", "TOKEN", SecretStr("tok"))),
    ])
    specs = {s.name: s for s in server_secret_specs(reference_with_secrets, launch,
                                                    SecretStr("k"))}
    assert specs["extra-secret"].values == {"TOKEN": SecretStr("tok")}
    assert specs["mlflow-secret-key"].values == {"SECRET_KEY": SecretStr("k")}
    # The settings' value wins over nothing; both name the same secret.
    oidc = specs["oauth2-proxy-secret"].values["client-secret"]
    assert isinstance(oidc, SecretStr)
    assert oidc.get_secret_value() == SECRET_VALUES["oidc_client_secret"]


def test_every_secret_reference_is_rendered_or_listed(reference_with_secrets: Settings) -> None:
    """Whatever the server's environment refers to exists, or the user is told to provide it."""
    for include in (False, True):
        rendered = render(reference_with_secrets, include_secrets=include,
                          secret_key=SecretStr(SECRET_KEY_VALUE))
        available = {(o["metadata"]["name"], key) for o in rendered.objects
                     if o["kind"] == "Secret" for key in o["data"]}
        available |= {(n.name, key) for n in rendered.secrets_needed for key in n.keys}
        for obj in rendered.objects:
            if obj["kind"] not in ("Deployment", "Job"):
                continue
            for c in obj["spec"]["template"]["spec"]["containers"]:
                for e in c["env"]:
                    if "valueFrom" in e:
                        ref = e["valueFrom"]["secretKeyRef"]
                        assert (ref["name"], ref["key"]) in available, (include, e["name"])
