"""The settings doctor checks with: resolved as every command resolves them, except that S3 keys
missing from the cluster's credentials Secret (or a value missing from a Secret named in
kubernetes.existing_secrets) are one of the faults doctor is there to name (a
finding with its fix), not a reason to stop before any check has run."""

from __future__ import annotations

from mlflow_stack.config.model import Settings
from mlflow_stack.deploy import Target, resolve_for
from mlflow_stack.kubernetes.sources import S3KeysNotFound, SecretValueMissing
from mlflow_stack.ops.doctor.findings import Finding, problem

S3_KEYS = "S3 keys"
# Settings.missing_secrets() names these when the keys are unknown: reported as the finding.
S3_SECRETS = ("S3 access key", "S3 secret key")
# ... and these too when a Secret named in kubernetes.existing_secrets lacks a value.
UNRESOLVED_SECRETS = (*S3_SECRETS, "database password")
SECRET_VALUES = "secret values"


def resolve_for_doctor(settings: Settings, target: Target) -> tuple[Settings, list[Finding]]:
    """(settings, findings made while resolving them). A missing OIDC client secret is the
    Keycloak check's to report, so it is not looked up here."""
    try:
        return resolve_for(settings, target, client_secret="skip"), []
    except S3KeysNotFound as exc:
        return settings, [problem(S3_KEYS, exc.message, exc.hint or "")]
    except SecretValueMissing as exc:
        return settings, [problem(SECRET_VALUES, f"what apply reads from the cluster: "
                                  f"{exc.message}", exc.hint or "")]
