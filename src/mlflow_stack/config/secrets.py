"""Secrets: read only from the environment or a dotenv file, held as SecretStr, never from YAML."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Secrets(BaseSettings):
    """Every secret the platform uses, with the environment variables it is read from (in order).

    The reference uses one `ADMIN_PASSWORD` for PostgreSQL, Keycloak and MLflow; a specific
    variable overrides it for one system.
    """

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, populate_by_name=False)

    admin_password: SecretStr | None = Field(None, validation_alias=_env("ADMIN_PASSWORD"))
    db_password: SecretStr | None = Field(None, validation_alias=_env("MLFLOW_STACK_DB_PASSWORD"))
    db_admin_password: SecretStr | None = Field(
        None, validation_alias=_env("MLFLOW_STACK_DB_ADMIN_PASSWORD")
    )
    s3_access_key_id: SecretStr | None = Field(
        None, validation_alias=_env("MLFLOW_STACK_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, validation_alias=_env("MLFLOW_STACK_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    keycloak_admin_password: SecretStr | None = Field(
        None, validation_alias=_env("KEYCLOAK_ADMIN_PASSWORD")
    )
    oidc_client_secret: SecretStr | None = Field(
        None, validation_alias=_env("MLFLOW_STACK_OIDC_CLIENT_SECRET")
    )
    # The SSO layer's session key. Locally it is generated once into the state dir; on
    # Kubernetes it lives in a Secret. Set it to share one key between several hosts.
    secret_key: SecretStr | None = Field(None, validation_alias=_env("MLFLOW_STACK_SECRET_KEY"))
    harbor_robot_token: SecretStr | None = Field(None, validation_alias=_env("HARBOR_ROBOT_TOKEN"))

    @classmethod
    def load(cls, env_files: list[Path] | None = None) -> Secrets:
        """Environment first, then the dotenv files that exist (earlier files win)."""
        files = tuple(p for p in (env_files or []) if p.is_file())
        return cls(_env_file=files or None)

    @classmethod
    def none(cls) -> Secrets:
        """No secrets at all (without reading the environment): for tests and rendering."""
        return cls.model_construct()

    # Effective values: a specific variable wins over the shared ADMIN_PASSWORD.
    @property
    def effective_db_password(self) -> SecretStr | None:
        return self.db_password or self.admin_password

    @property
    def effective_db_admin_password(self) -> SecretStr | None:
        return self.db_admin_password or self.effective_db_password

    @property
    def effective_keycloak_admin_password(self) -> SecretStr | None:
        return self.keycloak_admin_password or self.admin_password

    def sources(self) -> dict[str, str]:
        """For each secret that is set, the first variable name it can come from (for display)."""
        result: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            if getattr(self, name) is not None and isinstance(field.validation_alias, AliasChoices):
                result[name] = " or ".join(str(c) for c in field.validation_alias.choices)
        return result


def env_names(field: str) -> str:
    """The variable names a secret field is read from, for error messages."""
    alias = Secrets.model_fields[field].validation_alias
    assert isinstance(alias, AliasChoices)
    return " or ".join(str(c) for c in alias.choices)
